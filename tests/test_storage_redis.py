"""RedisStorage against a real redis-server: ring resizing, expiries, tight Retry-After, memory, cost."""

from __future__ import annotations

import random
import threading
import time

import pytest
from django.core.cache import caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_redis import get_redis_connection
from redis import Redis
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from ratelimit_tiers.algorithms import COUNTER, EXACT, EXACT_MAX_LIMIT
from ratelimit_tiers.authentication import APIKeyAuthentication
from ratelimit_tiers.models import APIKey, Tier
from ratelimit_tiers.names import (
    COUNTER_KIND,
    EXACT_KIND,
    account_tag,
    counter_base,
    counter_key,
    generation_key,
    ledger_key,
    policy_key,
)
from ratelimit_tiers.policies import KINDS, encode
from ratelimit_tiers.rules import Rule, applicable
from ratelimit_tiers.storage import get_storage
from ratelimit_tiers.storage.redis import SCRIPT_SHA, RedisStorage
from ratelimit_tiers.storage.transport import KEPT_CONNECTIONS, encode_command
from ratelimit_tiers.throttling import TierRateThrottle
from testproject.views import ItemViewSet
from tests.conftest import URL, clear_of_minute_edge
from tests.processes import run_python

pytestmark = [pytest.mark.redis, pytest.mark.django_db]


#: The fields of a tier's one rule as its columns were named.
COLUMNS = {"limit": "count", "window_seconds": "window_seconds", "algorithm": "algorithm"}


def set_tier(tier, **fields):
    """Change the tier's one rule (its seeded all-categories rule) as its columns once were changed."""
    rule = tier.rules.get()
    for name, value in fields.items():
        setattr(rule, COLUMNS[name], value)
    rule.save()  # Evicts the policies of the tier's keys.


def bucket(prefix, algorithm, category="read"):
    """The store key of the counter the key's one rule keeps in ``category``, in ``algorithm``'s layout."""
    key = APIKey.objects.select_related("account").get(prefix=prefix)
    [rule] = applicable(key.account.effective_rules(), category)
    base = counter_base(account_tag(key.account_id), prefix, category)
    return caches["default"].make_key(counter_key(base, rule.name, KINDS[algorithm]))


def ring(prefix, category="read"):
    """(size, stamps from the oldest slot) of the key's exact-mode ring, read raw."""
    key = bucket(prefix, EXACT, category)
    client = get_redis_connection("default")
    head, size = client.execute_command("BITFIELD", key, "GET", "u48", "#0", "GET", "u48", "#1")
    if size == 0:
        return 0, []
    args = []
    for i in range(size):
        args += ["GET", "u48", f"#{5 + (head + i) % size}"]  # Slots 0-4 are the header.
    return size, list(client.execute_command("BITFIELD", key, *args))


def admit_distinct(storage, prefix, count, account):
    """Admit ``count`` requests at distinct milliseconds; return how many were admitted."""
    admitted = 0
    for _ in range(count):
        outcome = storage.hit(prefix, account.pk, "read")
        assert outcome.decision is not None
        admitted += outcome.decision.allowed
        time.sleep(0.002)
    return admitted


def test_ring_shrinks_and_grows_keeping_the_newest_stamps(redis_cache, account, free_tier, raw_key):
    prefix = APIKey.objects.get().prefix
    storage = get_storage()
    set_tier(free_tier, limit=5)
    assert admit_distinct(storage, prefix, 5, account) == 5
    size, stamps = ring(prefix)
    assert size == 5
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 5

    set_tier(free_tier, limit=3)
    outcome = storage.hit(prefix, account.pk, "read")
    assert outcome.decision is not None
    assert not outcome.decision.allowed  # The three newest are still inside the window.
    assert ring(prefix) == (3, stamps[2:])

    set_tier(free_tier, limit=5)
    decision = storage.peek(prefix, account.pk, "read").decision
    assert decision is not None
    assert decision.allowed
    assert decision.remaining == 2
    assert ring(prefix) == (5, [0, 0, *stamps[2:]])  # Free slots are the "oldest".
    assert admit_distinct(storage, prefix, 3, account) == 2
    size, grown = ring(prefix)
    assert size == 5
    assert grown[:3] == stamps[2:]
    assert grown == sorted(grown)
    assert grown[3] > stamps[-1]


def test_ring_shrinks_correctly_after_wrapping(redis_cache, account, free_tier, raw_key):
    prefix = APIKey.objects.get().prefix
    storage = get_storage()
    set_tier(free_tier, limit=3, window_seconds=1)
    assert admit_distinct(storage, prefix, 3, account) == 3
    time.sleep(1.05)  # All three leave the window; the next two overwrite slots 0 and 1.
    assert admit_distinct(storage, prefix, 2, account) == 2
    _size, stamps = ring(prefix)
    assert stamps == sorted(stamps)

    set_tier(free_tier, limit=2)
    storage.peek(prefix, account.pk, "read")
    assert ring(prefix) == (2, stamps[1:])


def script_commands(client, action):
    """Calls of each command Redis ran while ``action`` ran, other than connecting and the EVALSHAs."""
    client.config_resetstat()
    action()
    skip = ("cmdstat_evalsha", "cmdstat_info", "cmdstat_config", "cmdstat_client", "cmdstat_hello")
    return {k: v["calls"] for k, v in client.info("commandstats").items() if not k.startswith(skip)}


def test_a_resize_runs_the_same_few_commands_at_any_size(redis_cache, account, free_tier, raw_key):
    """Shrinking a full ring moves its bytes in a fixed number of commands, 100 stamps or 10,000:
    nothing in a script call grows with the limit but the bytes Redis copies (60 KB at most)."""
    prefix = APIKey.objects.get().prefix
    storage = get_storage()
    client = get_redis_connection("default")
    commands = {}
    for size in (100, EXACT_MAX_LIMIT):
        storage.clear(prefix, account.pk, ["read"])
        set_tier(free_tier, limit=size, algorithm="exact")
        fill(storage, prefix, size, account)
        _size, stamps = ring(prefix)
        assert len(stamps) == size
        smaller = size - size // 10
        set_tier(free_tier, limit=smaller)
        commands[size] = script_commands(client, lambda: storage.peek(prefix, account.pk, "read"))
        assert ring(prefix) == (smaller, stamps[size // 10 :])  # The newest stamps, in order.
    assert commands[100] == commands[EXACT_MAX_LIMIT]
    print(f"\ncommands of one resize, at 100 and at {EXACT_MAX_LIMIT:,}: {commands[100]}")


@pytest.mark.parametrize("limit", [EXACT_MAX_LIMIT, EXACT_MAX_LIMIT + 1, 1_000_000])
def test_no_ring_is_kept_above_the_exact_cap(redis_cache, account, free_tier, raw_key, limit):
    prefix = APIKey.objects.get().prefix
    set_tier(free_tier, limit=limit, algorithm="exact")
    decision = get_storage().hit(prefix, account.pk, "read").decision
    assert (decision.allowed, decision.limit, decision.remaining) == (True, limit, limit - 1)
    client = get_redis_connection("default")
    exact, counter = (bucket(prefix, a) for a in (EXACT, COUNTER))
    if limit <= EXACT_MAX_LIMIT:
        assert ring(prefix)[0] == limit
        assert not client.exists(counter)
    else:  # The counter: two numbers, whatever the limit.
        assert not client.exists(exact)
        assert client.hgetall(counter).keys() == {b"w", b"c", b"p"}


def test_no_policy_asks_the_script_for_a_ring_above_exact_max_limit(settings):
    # The script keeps the ring a rule's kind asks for: the policy caps it.
    settings.RATELIMIT_TIERS_ALGORITHM = "exact"
    rules = (Rule(EXACT_MAX_LIMIT, 60), Rule(EXACT_MAX_LIMIT + 1, 60, category="read", algorithm="exact"))
    assert [part.split()[0] for part in encode(rules).split(";")] == [EXACT_KIND, COUNTER_KIND]


@pytest.mark.parametrize("algorithm", ["exact", "counter"])
def test_every_key_written_has_an_expiry(redis_cache, account, free_tier, raw_key, algorithm):
    prefix = APIKey.objects.get().prefix
    storage = get_storage()
    set_tier(free_tier, limit=3, algorithm=algorithm)
    for category in ("read", "write", "delete", "auth"):
        for _ in range(5):  # Admissions and refusals.
            storage.hit(prefix, account.pk, category)
    storage.peek(prefix, account.pk, "read")
    client = get_redis_connection("default")
    keys = list(client.scan_iter("*"))
    ledger = [key for key in keys if b":u:" in key]  # The account's usage ledger: this hour's hash (or two).
    assert 1 <= len(ledger) <= 2
    assert (
        len(keys) - len(ledger) == 6
    )  # The policy, its generation (set_tier evicted it), a bucket per category.
    for key in keys:
        assert client.pttl(key) > 0, key


def test_retry_after_is_tight_in_exact_mode(redis_cache, free_tier, api):
    set_tier(free_tier, limit=2, window_seconds=2, algorithm="exact")
    assert api.get(URL).status_code == 200
    assert api.get(URL).status_code == 200
    refused = api.get(URL)
    refused_at = time.monotonic()
    assert refused.status_code == 429
    retry_after = int(refused["Retry-After"])
    assert retry_after == 2

    time.sleep(retry_after - 1)
    early = api.get(URL)
    assert early.status_code == 429  # One second early is too early...
    assert early["Retry-After"] == "1"

    time.sleep(max(0.0, refused_at + retry_after - time.monotonic()))
    assert api.get(URL).status_code == 200  # ...and waiting Retry-After is enough.


def fill(storage, prefix, count, account):
    for _ in range(count):
        storage.hit(prefix, account.pk, "read")


def full_bucket_bytes(prefix, algorithm, account):
    """Fill the key's read bucket past its limit; return the bucket's MEMORY USAGE."""
    storage = get_storage()
    fill(storage, prefix, 5001, account)
    decision = storage.peek(prefix, account.pk, "read").decision
    assert decision is not None
    assert not decision.allowed
    key = bucket(prefix, algorithm)
    return get_redis_connection("default").memory_usage(key, samples=0)


def test_memory_of_a_full_5000_per_minute_key(redis_cache, account, free_tier, raw_key):
    prefix = APIKey.objects.get().prefix
    set_tier(free_tier, limit=5000, algorithm="exact")
    assert full_bucket_bytes(prefix, "exact", account) <= 40 * 1024

    set_tier(free_tier, algorithm="counter")
    clear_of_minute_edge()  # Exactly 5,000 fit only inside one fixed window.
    assert full_bucket_bytes(prefix, "counter", account) <= 200


def client_commands(url, action):
    """Commands clients other than Lua scripts sent to Redis while ``action`` ran (via MONITOR)."""
    monitor_client, marker_client = Redis.from_url(url), Redis.from_url(url)
    marker_client.ping()  # Connect (HELLO) before monitoring starts.
    marker = f"rlt-test-end-{threading.get_ident()}"
    seen = []
    with monitor_client.monitor() as monitor:
        action()
        marker_client.echo(marker)
        while True:
            event = monitor.next_command()
            if marker in event["command"]:
                break
            if event["client_type"] != "lua":
                seen.append(event["command"].split()[0].upper())
    monitor_client.close()
    marker_client.close()
    return seen


@pytest.mark.parametrize("algorithm", ["exact", "counter"])
def test_a_warm_check_is_one_round_trip_and_no_sql(any_redis_cache, free_tier, raw_key, algorithm):
    set_tier(free_tier, algorithm=algorithm)
    factory = APIRequestFactory()
    view = ItemViewSet()
    throttle = TierRateThrottle()

    def check():
        request = Request(
            factory.get(URL, HTTP_AUTHORIZATION=f"Api-Key {raw_key}"),
            authenticators=[APIKeyAuthentication()],
            parser_context={"view": view},
        )
        assert request.auth is not None
        assert throttle.allow_request(request, view)

    check()  # Cold: loads the identity and the policy from the database.
    stats = Redis.from_url(any_redis_cache)
    before = stats.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    with CaptureQueriesContext(connection) as queries:
        commands = client_commands(any_redis_cache, check)
    after = stats.info("commandstats")["cmdstat_evalsha"]["calls"]
    assert commands == ["EVALSHA"]
    assert after - before == 1
    assert len(queries) == 0
    stats.close()


@pytest.mark.parametrize("algorithm", ["exact", "counter"])
def test_a_refusal_is_one_round_trip_and_no_sql(any_redis_cache, free_tier, api, algorithm):
    # The store's answer holds the tier and shadow flag that the refusal's
    # signal and log need: a 429 asks nothing more of Redis or the database.
    set_tier(free_tier, limit=1, algorithm=algorithm)
    assert api.get(URL).status_code == 200  # Cold: loads the identity and the policy.
    stats, responses = Redis.from_url(any_redis_cache), []
    before = stats.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    with CaptureQueriesContext(connection) as queries:
        commands = client_commands(any_redis_cache, lambda: responses.append(api.get(URL)))
    after = stats.info("commandstats")["cmdstat_evalsha"]["calls"]
    assert [r.status_code for r in responses] == [429]
    assert commands == ["EVALSHA"]
    assert after - before == 1
    assert len(queries) == 0
    stats.close()


def test_a_policy_stored_without_rules_or_a_shadow_flag_is_loaded_again(
    redis_cache, account, free_tier, raw_key
):
    # A policy hash written before policies carried their rules and shadow flag (an
    # upgrade) is a miss: the tier's rules and flag are never taken as none and off.
    prefix = APIKey.objects.get().prefix
    storage = get_storage()
    outcome = storage.hit(prefix, account.pk, "read")
    assert (outcome.tier, outcome.shadow) == ("Free", False)
    Tier.objects.filter(pk=free_tier.pk).update(shadow=True)  # No signal: the stored policy stays.
    assert storage.hit(prefix, account.pk, "read").shadow is False
    policy = caches["default"].make_key(policy_key(account_tag(account.pk), prefix))
    get_redis_connection("default").hdel(policy, "shadow", "r:")
    outcome = storage.hit(prefix, account.pk, "read")
    assert (outcome.tier, outcome.shadow, outcome.decision.remaining) == ("Free", True, 57)


def test_expired_prefix_grows_and_is_consumed(redis_cache, account, free_tier, raw_key):
    # Limit 10 per 1 s: after the window passes, every slot has expired at once
    # (the galloping search crosses the whole ring), then admissions consume them.
    prefix = APIKey.objects.get().prefix
    set_tier(free_tier, limit=10, window_seconds=1, algorithm="exact")
    storage = get_storage()
    assert [storage.hit(prefix, account.pk, "read").decision.remaining for _ in range(10)] == list(
        range(9, -1, -1)
    )
    assert not storage.hit(prefix, account.pk, "read").decision.allowed
    time.sleep(1.05)
    assert storage.peek(prefix, account.pk, "read").decision.remaining == 10
    assert [storage.hit(prefix, account.pk, "read").decision.remaining for _ in range(4)] == [9, 8, 7, 6]
    time.sleep(0.5)
    assert [storage.hit(prefix, account.pk, "read").decision.remaining for _ in range(6)] == [
        5,
        4,
        3,
        2,
        1,
        0,
    ]
    refused = storage.hit(prefix, account.pk, "read").decision
    assert not refused.allowed
    # The four from the first burst leave first: about 0.5 s from now.
    assert 0 < refused.reset_after <= 0.5


def test_exact_ring_matches_the_sliding_log_definition(redis_cache, account, free_tier, raw_key):
    # Random gaps and bursts on a 1 s window, checked against the definition on
    # the server's own clock: admitted iff fewer than `limit` admissions lie
    # within the window. A stored stamp is the check's millisecond or the next
    # (it rounds up), so counts are bounded by both readings.
    prefix = APIKey.objects.get().prefix
    set_tier(free_tier, limit=5, window_seconds=1, algorithm="exact")
    storage, rng, window, admitted = get_storage(), random.Random(7), 1000, []
    for _ in range(90):
        decision = storage.hit(prefix, account.pk, "read").decision
        now = round(decision.now * 1000)
        live_low = sum(now - s < window for s in admitted)  # Stamps read as `now`...
        live_high = sum(now - (s + 1) < window for s in admitted)  # ...or as one ms later.
        if decision.allowed:
            assert live_low < 5
            assert 5 - live_high - 1 <= decision.remaining <= 5 - live_low - 1
            admitted.append(now)
        else:
            assert live_high >= 5
            oldest = min(s for s in admitted if now - (s + 1) < window)
            assert oldest + window - now <= round(decision.reset_after * 1000) <= oldest + 1 + window - now
        time.sleep(rng.choice([0, 0, 0.01, 0.03, 0.08, 0.25]))
    assert 5 < len(admitted) < 90  # Both admissions and refusals happened.


@pytest.mark.parametrize("algorithm", ["exact", "counter"])
def test_bucket_expiry_is_bounded_by_two_windows(redis_cache, account, free_tier, raw_key, algorithm):
    prefix = APIKey.objects.get().prefix
    set_tier(free_tier, limit=100, window_seconds=60, algorithm=algorithm)
    storage = get_storage()
    for _ in range(3):
        storage.hit(prefix, account.pk, "read")
    key = bucket(prefix, algorithm)
    ttl = get_redis_connection("default").pttl(key)
    # At least a window after the newest hit; at most two (+1 ms: stamps round up).
    assert 59_000 < ttl <= 120_001


def test_a_flushed_script_is_loaded_again(redis_cache, account, free_tier, raw_key):
    prefix = APIKey.objects.get().prefix
    storage = get_storage()
    assert storage.hit(prefix, account.pk, "read").decision.remaining == 59
    get_redis_connection("default").script_flush()
    assert storage.hit(prefix, account.pk, "read").decision.remaining == 58


def test_a_killed_connection_is_replaced(redis_cache, account, free_tier, raw_key):
    prefix = APIKey.objects.get().prefix
    storage = get_storage()
    assert storage.hit(prefix, account.pk, "read").decision.remaining == 59
    # Every connection dies (as in a Redis restart), the one the storage keeps
    # too: the check is sent again on one that the pool checks, and counts once.
    Redis.from_url(redis_cache).client_kill_filter(_type="normal", skipme=True)
    assert storage.hit(prefix, account.pk, "read").decision.remaining == 58
    assert storage.hit(prefix, account.pk, "read").decision.remaining == 57


def in_use(storage):
    return len(storage.client().connection_pool._in_use_connections)


def test_kept_connections_are_bounded_and_leave_the_pool_alone(redis_cache, account, free_tier, raw_key):
    import gc

    prefix = APIKey.objects.get().prefix
    server = Redis.from_url(redis_cache)
    storage = RedisStorage("default")
    storage.hit(prefix, account.pk, "read")  # Installs the policy: the threads need no database.
    barrier = threading.Barrier(3 * KEPT_CONNECTIONS)

    def check(storage):
        barrier.wait(timeout=10)
        assert storage.hit(prefix, account.pk, "read").decision.allowed

    threads = [threading.Thread(target=check, args=(storage,)) for _ in range(barrier.parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # More checks ran at once than a storage opens: the rest borrowed and gave back.
    assert storage.peek(prefix, account.pk, "read").decision.remaining == 60 - 1 - barrier.parties
    assert len(storage.transport.kept) == storage.transport.opened == KEPT_CONNECTIONS
    assert in_use(storage) == 0
    gc.collect()  # Storages of earlier tests close theirs.
    clients = len(server.client_list())
    del storage, threads
    gc.collect()  # A dropped storage closes its connections.
    assert len(server.client_list()) == clients - KEPT_CONNECTIONS


def test_a_forked_child_opens_its_own_connection(redis_cache, account, free_tier, raw_key):
    import os

    prefix = APIKey.objects.get().prefix
    storage = get_storage()
    assert storage.hit(prefix, account.pk, "read").decision.remaining == 59
    (parent_connection,) = storage.transport.kept
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which coverage does not follow.
        ok = storage.hit(prefix, account.pk, "read").decision.remaining == 58
        ok = ok and all(kept.pid == os.getpid() for kept in storage.transport.kept)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert storage.hit(prefix, account.pk, "read").decision.remaining == 57
    assert list(storage.transport.kept) == [parent_connection]


def test_encoded_calls_match_redis_py(redis_cache):
    from redis.connection import Connection

    parts = ("EVALSHA", SCRIPT_SHA, 3, ":1:rlt:{abc}:policy", "ключ", "read", "1", 300, 0.5)
    assert encode_command(*parts) == b"".join(Connection().pack_command(*parts))


def test_djangos_own_redis_cache_gets_the_script_on_its_write_server(
    builtin_redis_cache, settings, account, raw_key
):
    # A read replica that refuses connections: every check must go to the
    # first server, where the backend writes, through the backend's own pool.
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": [builtin_redis_cache, "redis://127.0.0.1:1/0"],
            "KEY_PREFIX": "shop",
            "VERSION": 3,
        }
    }
    prefix = APIKey.objects.get().prefix
    server = Redis.from_url(builtin_redis_cache)
    server.flushdb()  # Creating the key wrote its generation under the old settings' prefix.
    storage = get_storage()
    assert type(storage) is RedisStorage
    assert storage.client().connection_pool is caches["default"]._cache._get_connection_pool(write=True)
    assert [storage.hit(prefix, account.pk, "read").decision.remaining for _ in range(3)] == [59, 58, 57]
    # The keys carry the cache's KEY_PREFIX and VERSION, as make_key shapes them.
    tag = account_tag(account.pk)
    counter = counter_key(counter_base(tag, prefix, "read"), "all-60s", "e")
    ledger = f"shop:3:{ledger_key(tag)}:".encode()  # This hour's usage ledger (or two hours').
    assert 1 <= len(server.keys(ledger + b"*")) <= 2
    keys = [key for key in server.keys("*") if not key.startswith(ledger)]
    assert sorted(keys) == sorted(f"shop:3:{k}".encode() for k in (counter, policy_key(tag, prefix)))
    storage.clear(prefix, account.pk, ["read"])
    storage.forget([(prefix, account.pk)])
    # Only the eviction's new generation is left (it expires on its own), beside the ledger.
    assert [key for key in server.keys("*") if not key.startswith(ledger)] == [
        f"shop:3:{generation_key(tag, prefix)}".encode()
    ]
    server.close()


NO_DJANGO_REDIS = """
import sys
sys.modules["django_redis"] = None  # As if the [redis] extra were not installed: redis-py alone.
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["ratelimit_tiers"],
    CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": sys.argv[1]}},
)
django.setup()
from ratelimit_tiers.algorithms import Rate
from ratelimit_tiers.storage import get_storage
storage = get_storage()
print(type(storage).__name__, [storage.hit_rate("ip:test", Rate(2, 60)).allowed for _ in range(3)])
"""


def test_djangos_own_redis_cache_needs_no_django_redis(builtin_redis_cache):
    result = run_python(NO_DJANGO_REDIS, builtin_redis_cache)
    assert result.stdout.strip() == "RedisStorage [True, True, False]", result.stderr


def test_counter_script_resets_the_last_admitted_when_the_refusal_says(
    redis_cache, account, free_tier, raw_key
):
    prefix = APIKey.objects.get().prefix
    set_tier(free_tier, limit=3, window_seconds=60, algorithm="counter")
    clear_of_minute_edge()  # Both decisions in one fixed window.
    storage = get_storage()
    decisions = [storage.hit(prefix, account.pk, "read").decision for _ in range(4)]
    last, refused = decisions[-2], decisions[-1]
    assert (last.allowed, last.remaining, refused.allowed) == (True, 0, False)
    # The same moment (ms on the server's clock), a few ms apart in `now`.
    assert round((last.now + last.reset_after) * 1000) == round((refused.now + refused.reset_after) * 1000)
    assert last.reset_at == refused.reset_at
    # Not the end of the fixed window: a third of the next one after it.
    assert round((last.now + last.reset_after) * 1000) % 60_000 == 20_000


@pytest.mark.parametrize("algorithm", ["exact", "counter"])
def test_give_back_frees_one_admission_and_never_a_later_one(
    redis_cache, account, free_tier, raw_key, algorithm
):
    prefix = APIKey.objects.get().prefix
    storage = get_storage()
    set_tier(free_tier, limit=3, algorithm=algorithm)
    first = storage.hit(prefix, account.pk, "read").decision
    time.sleep(0.003)  # Distinct stamps.
    second = storage.hit(prefix, account.pk, "read").decision
    if algorithm == "exact":
        # Only the newest stamp can go; dropping the second's instead would admit early.
        assert not storage.give_back(prefix, account.pk, "read", 1, first)
        assert storage.peek(prefix, account.pk, "read").decision.remaining == 1
    assert storage.give_back(prefix, account.pk, "read", 1, second)
    assert storage.peek(prefix, account.pk, "read").decision.remaining == 2
    assert [storage.hit(prefix, account.pk, "read").decision.allowed for _ in range(3)] == [True, True, False]
    if algorithm == "exact":
        size, stamps = ring(prefix)
        assert size == 3 and stamps[0] - round(first.now * 1000) in (0, 1)  # The first is still the oldest.
    set_tier(free_tier, limit=3)  # Evicts the policy: without it, nothing is given back.
    assert not storage.give_back(prefix, account.pk, "read", 1, first)


def test_exact_ring_with_give_backs_matches_the_sliding_log_definition(
    redis_cache, account, free_tier, raw_key
):
    # As above, with some admissions given back at once (they leave the log) and
    # some older ones asked back in vain (a later stamp is the newest).
    prefix = APIKey.objects.get().prefix
    set_tier(free_tier, limit=5, window_seconds=1, algorithm="exact")
    storage, rng, window, admitted, older = get_storage(), random.Random(11), 1000, [], None
    given_back = 0
    for _ in range(90):
        decision = storage.hit(prefix, account.pk, "read").decision
        now = round(decision.now * 1000)
        live_low = sum(now - s < window for s in admitted)
        live_high = sum(now - (s + 1) < window for s in admitted)
        if decision.allowed:
            assert live_low < 5
            assert 5 - live_high - 1 <= decision.remaining <= 5 - live_low - 1
            if older is not None and now - round(older.now * 1000) >= 2 and rng.random() < 0.2:
                assert not storage.give_back(prefix, account.pk, "read", 1, older)
            if rng.random() < 0.3:
                assert storage.give_back(prefix, account.pk, "read", 1, decision)
                given_back += 1
            else:
                admitted.append(now)
                older = decision
        else:
            assert live_high >= 5
        time.sleep(rng.choice([0, 0.002, 0.01, 0.03, 0.08, 0.25]))
    assert given_back > 5 and 5 < len(admitted) < 90


def test_a_calendar_quota_keeps_one_small_counter_whatever_its_count(redis_cache, free_tier, account):
    from django.core.cache import caches

    from ratelimit_tiers.models import LimitRule
    from ratelimit_tiers.names import QUOTA_KIND, account_tag, counter_base, counter_key
    from tests.conftest import set_rule

    LimitRule.objects.filter(tier=free_tier).delete()
    set_rule(free_tier, "100000/month")
    prefix = APIKey.objects.create_key(account=account, name="quota")[0].prefix
    storage = get_storage()
    for _ in range(50):
        assert storage.hit(prefix, account.pk, "read", cost=1000).allowed
    start = storage.calendar.period("month")[0]
    base = counter_base(account_tag(account.pk), prefix, "read")
    name = caches["default"].make_key(counter_key(base, "all-month", QUOTA_KIND, start))
    connection = get_redis_connection("default")
    assert int(connection.get(name)) == 50_000
    assert connection.memory_usage(name, samples=0) <= 200
    assert 0 < connection.pttl(name) <= (storage.calendar.period("month")[1] - start) + 3_600_000
