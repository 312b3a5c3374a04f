"""Exactly N admitted when many processes or threads hammer one key on a real Redis.

The children are spawned OS processes with a minimal Django of their own and no
database: the parent installs the key's policy in Redis first, so each child's
``RedisStorage.hit`` is the same one script call a web worker makes.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = [pytest.mark.redis, pytest.mark.django_db]

PROCESSES = 8
LIMIT = 100
HITS_PER_WORKER = 40  # 320 attempts on a limit of 100.
RUNS = 20

_barrier = None


def _setup_child(url, barrier):
    global _barrier
    _barrier = barrier
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["ratelimit_tiers"],
        DATABASES={},  # A child that needed SQL would fail loudly.
        CACHES={
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 5, "SOCKET_TIMEOUT": 5},
            }
        },
        USE_TZ=True,
    )
    django.setup()


def _hammer(prefix):
    from ratelimit_tiers.storage import get_storage

    storage = get_storage()
    storage.peek(prefix, "read")  # Connect before the start line.
    _barrier.wait(timeout=30)
    admitted = 0
    for _ in range(HITS_PER_WORKER):
        decision = storage.hit(prefix, "read").decision
        admitted += decision.allowed
    return admitted


@pytest.fixture(scope="module")
def pool(redis_server):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    with context.Pool(PROCESSES, initializer=_setup_child, initargs=(redis_server.url, barrier)) as pool:
        yield pool


def prepare(free_tier, account, algorithm):
    from ratelimit_tiers.models import APIKey
    from ratelimit_tiers.storage import get_storage

    # An hour-long window keeps counter mode away from a window boundary during a run.
    free_tier.limit, free_tier.window_seconds, free_tier.algorithm = LIMIT, 3600, algorithm
    free_tier.save()
    key, _raw = APIKey.objects.create_key(account=account, name=algorithm)
    storage = get_storage()
    assert storage.peek(key.prefix, "read").decision.limit == LIMIT  # Installs the policy.
    return storage, key.prefix


@pytest.mark.parametrize("algorithm", ["exact", "counter"])
def test_eight_processes_admit_exactly_the_limit(redis_cache, pool, free_tier, account, algorithm):
    storage, prefix = prepare(free_tier, account, algorithm)
    results = []
    for _ in range(RUNS):
        storage.clear(prefix)
        results.append(sum(pool.map(_hammer, [prefix] * PROCESSES, chunksize=1)))
    assert results == [LIMIT] * RUNS


@pytest.mark.parametrize("algorithm", ["exact", "counter"])
def test_eight_threads_admit_exactly_the_limit(redis_cache, free_tier, account, algorithm):
    storage, prefix = prepare(free_tier, account, algorithm)
    results = []
    for _ in range(5):
        storage.clear(prefix)
        start = threading.Barrier(PROCESSES)

        def hammer(start=start):
            start.wait(timeout=30)
            return sum(storage.hit(prefix, "read").decision.allowed for _ in range(HITS_PER_WORKER))

        with ThreadPoolExecutor(PROCESSES) as executor:
            futures = [executor.submit(hammer) for _ in range(PROCESSES)]
            results.append(sum(f.result() for f in futures))
    assert results == [LIMIT] * 5
