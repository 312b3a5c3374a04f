"""Exactly N admitted when many processes or threads hammer one key on a real Redis.

The children are spawned OS processes with a minimal Django of their own and no
database: the parent installs the key's policy in Redis first, so each child's
``RedisStorage.hit`` is the same one script call a web worker makes. They run
on django-redis and on Django's own Redis cache backend.
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

#: The default cache of the children (and of the parent), without its LOCATION.
BACKENDS = {
    "django_redis": {
        "BACKEND": "django_redis.cache.RedisCache",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 5, "SOCKET_TIMEOUT": 5},
    },
    "builtin": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "OPTIONS": {"socket_connect_timeout": 5, "socket_timeout": 5},
    },
}


def _setup_child(url, barrier, backend):
    global _barrier
    _barrier = barrier
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["ratelimit_tiers"],
        DATABASES={},  # A child that needed SQL would fail loudly.
        CACHES={"default": {**BACKENDS[backend], "LOCATION": url}},
        USE_TZ=True,
    )
    django.setup()


def _hammer(key):
    from ratelimit_tiers.storage import get_storage

    prefix, account = key
    storage = get_storage()
    storage.peek(prefix, account, "read")  # Connect before the start line.
    _barrier.wait(timeout=30)
    admitted = 0
    for _ in range(HITS_PER_WORKER):
        decision = storage.hit(prefix, account, "read").decision
        admitted += decision.allowed
    return type(storage).__name__, admitted


@pytest.fixture(scope="module", params=list(BACKENDS))
def pool(request, redis_server):
    """(backend, a pool of spawned processes whose default cache uses it)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    initargs = (redis_server.url, barrier, request.param)
    with context.Pool(PROCESSES, initializer=_setup_child, initargs=initargs) as pool:
        yield request.param, pool


def prepare(free_tier, account, algorithm):
    from ratelimit_tiers.models import APIKey
    from ratelimit_tiers.storage import get_storage
    from tests.conftest import only_rule

    # An hour-long window keeps counter mode away from a window boundary during a run.
    only_rule(free_tier, f"{LIMIT}/h", algorithm=algorithm)
    key, _raw = APIKey.objects.create_key(account=account, name=algorithm)
    storage = get_storage()
    assert storage.peek(key.prefix, account.pk, "read").decision.limit == LIMIT  # Installs the policy.
    return storage, key.prefix


@pytest.mark.parametrize("algorithm", ["exact", "counter"])
def test_eight_processes_admit_exactly_the_limit(request, pool, free_tier, account, algorithm):
    backend, workers = pool
    request.getfixturevalue("redis_cache" if backend == "django_redis" else "builtin_redis_cache")
    storage, prefix = prepare(free_tier, account, algorithm)
    results = []
    for _ in range(RUNS):
        storage.clear(prefix, account.pk, ["read"])
        answers = workers.map(_hammer, [(prefix, account.pk)] * PROCESSES, chunksize=1)
        assert {name for name, _admitted in answers} == {"RedisStorage"}  # One script per check.
        results.append(sum(admitted for _name, admitted in answers))
    assert results == [LIMIT] * RUNS


@pytest.mark.parametrize("algorithm", ["exact", "counter"])
def test_eight_threads_admit_exactly_the_limit(redis_cache, free_tier, account, algorithm):
    storage, prefix = prepare(free_tier, account, algorithm)
    results = []
    for _ in range(5):
        storage.clear(prefix, account.pk, ["read"])
        start = threading.Barrier(PROCESSES)

        def hammer(start=start):
            start.wait(timeout=30)
            hits = (storage.hit(prefix, account.pk, "read") for _ in range(HITS_PER_WORKER))
            return sum(outcome.decision.allowed for outcome in hits)

        with ThreadPoolExecutor(PROCESSES) as executor:
            futures = [executor.submit(hammer) for _ in range(PROCESSES)]
            results.append(sum(f.result() for f in futures))
    assert results == [LIMIT] * 5


# --- An account's shared pool: every key of the account draws on one count.

POOL_LIMIT = 60
POOL_PROCESSES = 3  # One key each.
POOL_RUNS = 20


def _setup_pool_child(url, barrier):
    _setup_child(url, barrier, "django_redis")


def _hammer_key(job):
    from ratelimit_tiers.storage import get_storage

    prefix, account = job
    storage = get_storage()
    storage.peek(prefix, account, "read")  # Connect before the start line.
    _barrier.wait(timeout=30)
    return sum(storage.hit(prefix, account, "read").allowed for _ in range(POOL_LIMIT))


@pytest.fixture(scope="module")
def pool_workers(redis_server):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(POOL_PROCESSES)
    with context.Pool(
        POOL_PROCESSES, initializer=_setup_pool_child, initargs=(redis_server.url, barrier)
    ) as pool:
        yield pool


@pytest.mark.parametrize("algorithm", ["exact", "counter"])
def test_an_account_pool_admits_exactly_its_count_across_keys_and_processes(
    redis_cache, pool_workers, free_tier, algorithm
):
    from ratelimit_tiers.models import Account, APIKey
    from ratelimit_tiers.storage import get_storage
    from tests.conftest import set_rule

    # Each key keeps its own 60/min, and all keys of an account share one more 60 per hour
    # (an hour keeps counter mode away from a window boundary during a run).
    set_rule(free_tier, f"{POOL_LIMIT}/h", scope="account", algorithm=algorithm)
    storage, results = get_storage(), []
    for run in range(POOL_RUNS):
        account = Account.objects.create(name=f"pool-{algorithm}-{run}", tier=free_tier)
        prefixes = [APIKey.objects.create_key(account=account, name=f"k{n}")[0].prefix for n in range(3)]
        for prefix in prefixes:  # Installs each key's policy: the children have no database.
            assert {d.policy for d in storage.peek(prefix, account.pk, "read").decisions} == {
                "all-60s",
                "all-3600s-account",
            }
        results.append(sum(pool_workers.map(_hammer_key, [(p, account.pk) for p in prefixes], chunksize=1)))
    # 180 attempts on 3 keys, each allowed 60 of its own: the account's 60 bind.
    assert results == [POOL_LIMIT] * POOL_RUNS
