"""One short Redis pause under load, on real processes: sync, threaded and async workers.

A 150 ms ``DEBUG SLEEP`` makes the store calls in flight wait out their 0.1 s
socket timeout, so fail-open admits those few requests uncounted. That must be
all it costs: the circuit breaker must not take the dozen concurrent timeouts
of one pause for "repeated failures" and stop limiting for its whole cool-down
(before, under 2 gthread workers x 8 threads, 1,800-6,800 requests got through
a limit of 300). Prints the numbers (run with ``-s``).
"""

from __future__ import annotations

import time

import pytest
from redis import Redis

from tests.conftest import RedisServer
from tests.processes import FAIL_OPEN_SETTINGS, WORKER_KINDS, Load, ProjectServer

pytestmark = pytest.mark.redis


LIMIT = 300  # per minute: the whole test runs well inside one window.
CLIENTS = 16  # client threads, each with one request in flight at a time.
STALL = 0.15  # seconds: longer than the 0.1 s socket timeout, shorter than two of them.
# Only a store call in flight during the pause can time out and be admitted
# uncounted, and a client waits out at most one such timeout per pause (its
# next request is answered when Redis resumes, before a second timeout): at
# most one extra request per client. Twice that leaves room for a loaded machine.
BOUND = 2 * CLIENTS


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path, "--enable-debug-command", "yes")
    yield server
    server.kill()


@pytest.mark.parametrize("kind", WORKER_KINDS)
def test_a_short_stall_admits_a_bounded_few_over_the_limit(redis, tmp_path, kind):
    project = ProjectServer(tmp_path, FAIL_OPEN_SETTINGS % redis.url, workers=2, kind=kind, threads=8)
    key = project.create_keys(("stall", "Free", LIMIT))["stall"]
    project.start()
    try:
        load = Load(project.port, key, threads=CLIENTS, limit=30)
        try:
            deadline = time.monotonic() + 20
            while not any(s.status == 429 for s in load.between(0, float("inf"))):
                assert time.monotonic() < deadline, "the key never reached its limit"
                time.sleep(0.05)
            time.sleep(0.5)  # Full and refusing, steadily.
            stalled = time.monotonic()
            with Redis.from_url(redis.url) as client:
                client.execute_command("DEBUG", "SLEEP", str(STALL))  # Redis answers no one for 150 ms.
            time.sleep(3)  # Longer than the breaker's 2 s cool-down: an open breaker would admit throughout.
        finally:
            samples = load.stop()
    finally:
        project.stop()

    statuses = [s.status for s in samples]
    admitted = statuses.count(200)
    # Admitted without the store's answer (its call failed or was skipped), so not counted.
    uncounted = [s for s in samples if s.status == 200 and not s.limited]
    near = [s for s in uncounted if stalled - 0.5 <= s.started < stalled + 0.5]
    print(
        f"\n{kind:>8} (2 workers{' x 8 threads' if kind == 'gthread' else ''}, {CLIENTS} clients): "
        f"{len(samples)} requests, {admitted} admitted against a limit of {LIMIT} "
        f"({admitted - LIMIT} over); {len(uncounted)} admitted uncounted, {len(near)} of them within "
        f"0.5 s of the {STALL * 1000:.0f} ms stall"
    )
    assert set(statuses) == {200, 429}
    assert LIMIT <= admitted <= LIMIT + BOUND
    assert "Traceback" not in project.log_text()
