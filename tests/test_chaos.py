"""Kill and freeze a real redis-server under load through a real multi-process WSGI server;
skew app servers' clocks.

Prints the latency numbers it measures (run with ``-s`` to see them); asserts
only generous sanity bounds on time, and exact counts on everything else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from redis import Redis

from ratelimit_tiers.models import APIKey
from ratelimit_tiers.storage import get_storage
from tests.conftest import RedisServer, set_rule
from tests.processes import FAIL_OPEN_SETTINGS, ROOT, Load, ProjectServer, burst, percentiles, recovered_after

pytestmark = pytest.mark.redis


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    if server.process is not None:
        server.process.send_signal(signal.SIGCONT)
    server.kill()


@pytest.fixture
def project(redis, tmp_path):
    project = ProjectServer(tmp_path, FAIL_OPEN_SETTINGS % redis.url, workers=3)
    yield project
    project.stop()


def report(name, samples):
    numbers = percentiles(samples)
    print(
        f"{name:>28}: n={numbers['n']:4d} p50={numbers['p50']:7.1f} ms p99={numbers['p99']:7.1f} ms "
        f"max={numbers['max']:7.1f} ms"
    )
    return numbers


def test_redis_killed_and_frozen_under_load(redis, project):
    keys = project.create_keys(
        ("load", "Enterprise", 10_000_000),
        ("after-restart", "Free", None),
        ("after-thaw", "Free", None),
    )
    project.start()
    load = Load(project.port, keys["load"], threads=6, limit=60)
    try:
        time.sleep(1)  # Warm-up: workers load code and connect.
        steady = time.monotonic()
        time.sleep(2)
        killed = time.monotonic()
        redis.kill()  # SIGKILL: connections are refused at once.
        time.sleep(4)
        restarted = time.monotonic()
        redis.start()  # Same port, empty: counters restart from zero.
        time.sleep(5)
        # Enforcement is exact again within 5 s: a new Free key gets exactly 60 of 150.
        statuses = [s.status for s in burst(project.port, keys["after-restart"], 150)]
        assert (statuses.count(200), statuses.count(429)) == (60, 90)

        frozen = time.monotonic()
        assert redis.process is not None
        redis.process.send_signal(signal.SIGSTOP)  # A hung Redis: every call waits for the timeout.
        time.sleep(4)
        thawed = time.monotonic()
        redis.process.send_signal(signal.SIGCONT)
        time.sleep(5)
        statuses = [s.status for s in burst(project.port, keys["after-thaw"], 150)]
        assert (statuses.count(200), statuses.count(429)) == (60, 90)
        end = time.monotonic()
    finally:
        samples = load.stop()

    print()
    before = report("before (steady)", [s for s in samples if steady <= s.started < killed])
    killed_samples = [s for s in samples if killed <= s.started < restarted]
    dead = report("redis killed (refused)", killed_samples)
    report("after restart", [s for s in samples if restarted <= s.started < frozen])
    frozen_samples = [s for s in samples if frozen <= s.started < thawed]
    hung = report("redis frozen (SIGSTOP)", frozen_samples)
    report("after thaw", [s for s in samples if thawed <= s.started < end])
    for name, start, stop in (("restart", restarted, frozen), ("thaw", thawed, end)):
        stray = sum(not s.limited for s in samples if start + 3 <= s.started < stop)
        print(
            f"{'limiting again after ' + name:>28}: {recovered_after(samples, start, stop):.1f} s "
            f"(later stray fail-opens, e.g. a reply over the 0.1 s timeout: {stray})"
        )
    print(f"{'added p99 while killed':>28}: {dead['p99'] - before['p99']:+.1f} ms")
    print(f"{'added p99 while frozen':>28}: {hung['p99'] - before['p99']:+.1f} ms")

    statuses = [s.status for s in samples]
    assert statuses.count(0) == 0, "connection errors"
    assert not [s for s in statuses if s >= 500], "5xx in fail-open mode"
    assert set(statuses) == {200}
    # The outages happened: responses without X-RateLimit-* headers (unknown, not invented).
    assert any(not s.limited for s in killed_samples)
    assert any(not s.limited for s in frozen_samples)
    # Generous sanity bounds only (a loaded CI machine is slow); the real numbers are printed.
    assert dead["p99"] < before["p99"] + 1000
    assert hung["p99"] < before["p99"] + 1000
    assert "Traceback" not in project.log_text()


CHILD = """
import os, sys, threading, time
skew = float(sys.argv[1])
_real = time.time
_real_ns = time.time_ns
time.time = lambda: _real() + skew  # This app server's clock is off by `skew` seconds.
time.time_ns = lambda: _real_ns() + int(skew * 1e9)
import django
django.setup()
from ratelimit_tiers.storage import get_storage
storage = get_storage()
admitted = []
def run():
    for _ in range(int(sys.argv[3])):
        if storage.hit(sys.argv[2], int(sys.argv[4]), "read").decision.allowed:
            admitted.append(1)
threads = [threading.Thread(target=run) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(len(admitted))
"""

CHILD_SETTINGS = """
from testproject.settings import *  # noqa
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": %r,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 5, "SOCKET_TIMEOUT": 5},
    }
}
"""


def test_app_servers_with_skewed_clocks_admit_exactly_the_limit(redis_cache, account, tmp_path):
    """Three app processes whose clocks are 30 s slow, right and 30 s fast share one limit exactly."""
    set_rule(account, 100)
    prefix = APIKey.objects.create_key(account=account, name="skew")[0].prefix
    # Resolve the policy here, where the test database is; the children only count.
    assert get_storage().peek(prefix, account.pk, "read").decision.remaining == 100
    (tmp_path / "skew_settings.py").write_text(CHILD_SETTINGS % redis_cache)
    with Redis.from_url(redis_cache) as server:
        seconds, micros = server.time()
    started = seconds * 1000 + micros // 1000  # Redis's clock, in ms, before any child runs.
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "skew_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, skew, prefix, "20", str(account.pk)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for skew in ("-30", "0", "30")
    ]
    counts = [int(child.communicate(timeout=60)[0].strip().splitlines()[-1]) for child in children]
    print(f"\nadmitted per process (clock -30 s, 0, +30 s): {counts}")
    assert sum(counts) == 100  # 240 attempts; the limit holds exactly whatever the app clocks say.
    decision = get_storage().peek(prefix, account.pk, "read").decision
    assert decision.remaining == 0
    # The reset is when the oldest admitted stamp leaves the 60 s window. The
    # children take seconds to start and run, so that stamp may be seconds
    # older than this look; but on Redis's clock it lies between the moment
    # before they started and now, not 30 s off either way.
    oldest = round((decision.now + decision.reset_after - 60) * 1000)
    assert started <= oldest <= round(decision.now * 1000)
