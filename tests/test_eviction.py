"""The limiter's Redis under memory pressure, on real redis-servers: the W005 deploy check,
the run-time warning, and what a full Redis with ``noeviction`` does to a check."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core import checks
from django_redis import get_redis_connection
from redis.exceptions import ResponseError

from ratelimit_tiers.exceptions import StorageUnavailable
from ratelimit_tiers.models import APIKey
from ratelimit_tiers.storage import get_storage
from tests.conftest import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.django_db]

POLICIES = ["allkeys-lru", "volatile-lru", "noeviction"]
W005 = "ratelimit_tiers.W005"


@pytest.fixture
def start_redis(tmp_path, settings):
    """Start a redis-server with extra arguments and point the default cache at it."""
    servers = []

    def start(*args):
        server = RedisServer(tmp_path, *args)
        servers.append(server)
        use(settings, server.url)
        return server

    yield start
    for server in servers:
        server.kill()


def use(settings, url):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.1, "SOCKET_TIMEOUT": 0.1},
        }
    }


def w005(deploy=True):
    # Only the cache checks: others read the database, which these tests do not open.
    tags = [checks.Tags.caches]
    return [m for m in checks.run_checks(include_deployment_checks=deploy, tags=tags) if m.id == W005]


@pytest.mark.parametrize("policy", POLICIES)
def test_the_deploy_check_warns_unless_noeviction(start_redis, policy):
    start_redis("--maxmemory", "64mb", "--maxmemory-policy", policy)
    messages = w005()
    print(f"\n{policy}: {[f'{m.id}: {m.msg} Hint: {m.hint}' for m in messages] or 'no W005'}")
    assert len(messages) == (policy != "noeviction")
    assert not w005(deploy=False)  # A plain `manage.py check` does not ask Redis.


def test_a_redis_that_refuses_config_is_asked_through_info(start_redis):
    start_redis("--maxmemory-policy", "allkeys-lfu", "--rename-command", "CONFIG", "")
    with pytest.raises(ResponseError):
        get_redis_connection("default").config_get("maxmemory-policy")
    assert "'allkeys-lfu'" in w005()[0].msg


def test_a_redis_that_is_down_gets_no_verdict(settings):
    use(settings, "redis://127.0.0.1:1/0")  # Nothing listens: refused.
    assert w005() == []


@pytest.mark.parametrize("cache", ["locmem", "missing alias"])
def test_no_redis_to_ask(settings, cache):
    if cache == "locmem":
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    else:
        settings.RATELIMIT_TIERS_CACHE = "nope"  # E002's business.
    assert w005() == []


@pytest.mark.parametrize("policy", POLICIES)
def test_warned_once_per_process_at_run_time(start_redis, raw_key, caplog, policy):
    start_redis("--maxmemory-policy", policy)
    caplog.set_level(logging.WARNING, "ratelimit_tiers")
    prefix, account = APIKey.objects.values_list("prefix", "account_id").get()
    storage = get_storage()
    assert storage.hit(prefix, account, "read").decision.allowed  # Loads the policy (SQLite: one thread).
    with ThreadPoolExecutor(8) as pool:  # Concurrent checks: the storage opens several connections.
        assert all(pool.map(lambda _: storage.hit(prefix, account, "read").decision.allowed, range(40)))
    warnings = [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert len(warnings) == (policy != "noeviction")


def test_a_full_redis_with_noeviction_fails_the_check(start_redis, raw_key):
    """No silent lifting: the script's write is refused, and fail-open or fail-closed applies."""
    start_redis("--maxmemory-policy", "noeviction")
    prefix, account = APIKey.objects.values_list("prefix", "account_id").get()
    storage = get_storage()
    assert storage.hit(prefix, account, "read").decision.allowed  # A warm key: its policy is in Redis.
    client = get_redis_connection("default")
    for i in range(4):
        client.set(f"ballast:{i}", b"x" * 1_000_000)
    client.config_set("maxmemory", "2mb")  # Full, well past the brim: nothing more may be written.
    with pytest.raises(ResponseError, match="maxmemory"):
        client.set("one-more", b"x")
    with pytest.raises(StorageUnavailable, match="maxmemory") as info:
        storage.hit(prefix, account, "read")
    print(f"\nfull Redis, noeviction: {info.value}")
