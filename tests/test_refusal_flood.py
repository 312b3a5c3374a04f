"""Floods of 429s on real gunicorn workers: what they cost the real redis-server.

Each worker serves the store's refusal of a key (and of a client network's
bad-key bucket) from its own memory for up to 1 s, so a flood costs about one
``EVALSHA`` per worker per second instead of one per request, whatever its
size. Prints the numbers (run with ``-s``); asserts counts, never speed: the
bound is computed from the flood's measured duration.
"""

from __future__ import annotations

import time

import pytest
from redis import Redis

from tests.conftest import RedisServer
from tests.processes import FAIL_OPEN_SETTINGS, ProjectServer, burst, request

pytestmark = pytest.mark.redis

WORKERS = 2
THREADS = 4  # per gthread worker
CLIENTS = 8  # client threads, each with one request in flight at a time
FLOOD = 400
UNKNOWN = "AAAAAAAAAAAA." + "a" * 43


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.kill()


def evalshas(client):
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def bound(kind, elapsed):
    """Store commands a flood of ``elapsed`` seconds may cost: each worker asks the store about once
    a second (its first request, then one renewal per second); a gthread worker's threads may all
    ask at once before its first answer is noted."""
    racing = WORKERS * THREADS if kind == "gthread" else 0
    return WORKERS * (int(elapsed) + 2) + racing


def flood(port, redis_client, key, kind, what):
    before, started = evalshas(redis_client), time.monotonic()
    samples = burst(port, key, FLOOD, threads=CLIENTS)
    elapsed = time.monotonic() - started
    commands = evalshas(redis_client) - before
    print(
        f"\n{kind}, {what}: {FLOOD} requests in {elapsed:.2f} s ({FLOOD / elapsed:.0f}/s), "
        f"{commands} EVALSHA ({commands / FLOOD:.3f} per 429); bound {bound(kind, elapsed)}"
    )
    assert {s.status for s in samples} == {429}
    assert commands <= bound(kind, elapsed)
    return samples


@pytest.mark.parametrize("kind", ["sync", "gthread"])
def test_a_429_flood_costs_the_store_about_one_command_per_worker_per_second(redis, tmp_path, kind):
    project = ProjectServer(
        tmp_path, FAIL_OPEN_SETTINGS % redis.url, workers=WORKERS, kind=kind, threads=THREADS
    )
    keys = project.create_keys(("flooded", "Free", 10), ("fresh", "Free", None))
    project.start()
    try:
        with Redis.from_url(redis.url) as client:
            assert [request(project.port, "/api/items/", keys["flooded"]).status for _ in range(10)] == [
                200
            ] * 10
            samples = flood(project.port, client, keys["flooded"], kind, "exhausted key")
            assert all(s.limited for s in samples)  # X-RateLimit-* on every 429, local or not.

            # Bad keys from one address: 60 a minute get 401 (each from the store), then 429s.
            statuses = [request(project.port, "/api/items/", UNKNOWN).status for _ in range(61)]
            assert statuses == [401] * 60 + [429]
            flood(project.port, client, UNKNOWN, kind, "unknown key")

        # Exactness is unchanged: a concurrent burst on a fresh key gets exactly its limit.
        statuses = [s.status for s in burst(project.port, keys["fresh"], 150, threads=32)]
        assert (statuses.count(200), statuses.count(429)) == (60, 90)
    finally:
        project.stop()
