"""RedisClusterStorage on a real 3-master Redis Cluster started by the tests."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from django.core.exceptions import ImproperlyConfigured
from redis import Redis

from ratelimit_tiers import tally_flush, usage
from ratelimit_tiers.models import Account, APIKey
from ratelimit_tiers.names import account_tag, policy_key
from ratelimit_tiers.refusal_tally import tally
from ratelimit_tiers.storage import get_storage
from ratelimit_tiers.storage.cluster import close_clients, hash_tag
from tests.conftest import RedisServer, free_port, set_rule

pytestmark = pytest.mark.redis

CLUSTER_STORAGE = "ratelimit_tiers.storage.cluster.RedisClusterStorage"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not installed: apt-get install redis-tools (or redis-server)")
    nodes = []
    try:
        for i in range(3):
            directory = tmp_path_factory.mktemp(f"cluster{i}")
            nodes.append(
                RedisServer(
                    directory,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(directory / "nodes.conf"),
                    "--cluster-node-timeout",
                    "2000",
                    # The default bus port (port + 10000) overflows for high free ports.
                    "--cluster-port",
                    str(free_port()),
                )
            )
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = []
            for node in nodes:
                with Redis(port=node.port) as client:
                    states.append(client.execute_command("CLUSTER INFO").get("cluster_state"))
            if states == ["ok"] * len(nodes):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the cluster did not become ready")
        yield nodes
    finally:
        close_clients()
        for node in nodes:
            node.kill()


@pytest.fixture
def on_cluster(cluster, settings):
    settings.RATELIMIT_TIERS_STORAGE = CLUSTER_STORAGE
    settings.RATELIMIT_TIERS_REDIS_CLUSTER = f"redis://127.0.0.1:{cluster[0].port}"
    for node in cluster:
        client = Redis(port=node.port)
        client.flushall()
        client.config_resetstat()
        client.close()
    yield cluster
    close_clients()


def errorstats(cluster):
    """Errors the nodes answered, by kind, and commands that failed or were rejected."""
    stats = {}
    for node in cluster:
        with Redis(port=node.port, decode_responses=True) as client:
            for name, value in client.info("errorstats").items():
                stats[f"{node.port}:{name}"] = value["count"]
            for name, value in client.info("commandstats").items():
                if value["failed_calls"] or value["rejected_calls"]:
                    stats[f"{node.port}:{name}"] = value
    return stats


def assert_no_errors(cluster):
    stats = errorstats(cluster)
    assert not [name for name in stats if "CROSSSLOT" in name.upper()]
    # Expected: redis-py's CLIENT SETINFO on connect is unknown to Redis 7.0 (ERR), and the
    # first EVALSHA on each node finds no script (NOSCRIPT, then SCRIPT LOAD).
    expected = ("errorstat_ERR", "cmdstat_client|setinfo", "errorstat_NOSCRIPT", "cmdstat_evalsha")
    assert not [name for name in stats if not name.endswith(expected)], stats
    for node in cluster:
        evalsha = stats.get(f"{node.port}:cmdstat_evalsha", {"failed_calls": 0})
        assert evalsha["failed_calls"] == stats.get(f"{node.port}:errorstat_NOSCRIPT", 0)
        assert evalsha.get("rejected_calls", 0) == 0


def node_of(cluster, key):
    with Redis(port=cluster[0].port) as client:
        slot = client.execute_command("CLUSTER KEYSLOT", key)
        for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return primary[1]
    raise AssertionError(f"no node serves slot {slot}")


def make_keys(account, count, limit):
    """``count`` keys, each of its own account (the store's hash tag) in ``account``'s tier, with
    ``limit`` per minute: ``(prefix, account id)`` pairs."""
    keys = []
    for i in range(count):
        owner = Account.objects.create(name=f"{account.name}-{i}", tier=account.tier)
        set_rule(owner, limit)
        keys.append((APIKey.objects.create_key(account=owner, name=f"k{i}")[0].prefix, owner.pk))
    return keys


def policy_of(storage, key):
    prefix, account = key
    return storage.make_key(policy_key(account_tag(account), prefix))


def test_threads_hammering_each_key_admit_exactly_its_limit(on_cluster, account):
    keys = make_keys(account, 12, 100)
    storage = get_storage()
    for key in keys:  # Load each policy once, here, where the test database is visible.
        assert storage.peek(*key, "read").decision.remaining == 100
    # The keys (of as many accounts) are spread over the masters.
    assert len({node_of(on_cluster, policy_of(storage, key)) for key in keys}) >= 2

    admitted = dict.fromkeys(keys, 0)
    lock = threading.Lock()

    def hit(i):
        key = keys[i % len(keys)]
        if storage.hit(*key, "read").decision.allowed:
            with lock:
                admitted[key] += 1

    with ThreadPoolExecutor(24) as pool:
        list(pool.map(hit, range(len(keys) * 160)))
    assert set(admitted.values()) == {100}
    assert_no_errors(on_cluster)


def test_clear_and_forget_never_cross_slots(on_cluster, account):
    keys = make_keys(account, 20, 3)
    storage = get_storage()
    for key in keys:
        for _ in range(3):
            assert storage.hit(*key, "read").decision.allowed
        assert not storage.hit(*key, "read").decision.allowed
    storage.clear(*keys[0], ["read"])
    assert storage.hit(*keys[0], "read").decision.allowed
    # Evicting many policies at once, across every master.
    set_rule(Account.objects.get(pk=keys[1][1]), 5)  # Signals evict the account's keys' policies.
    assert storage.hit(*keys[1], "read").decision.limit == 5
    assert len({node_of(on_cluster, policy_of(storage, key)) for key in keys}) >= 2
    storage.forget(keys)
    assert_no_errors(on_cluster)


def test_give_back_on_every_master(on_cluster, account):
    keys = make_keys(account, 60, 3)
    by_master = {node_of(on_cluster, policy_of(get_storage(), key)): key for key in keys}  # One on each.
    assert len(by_master) == 3
    keys = list(by_master.values())
    storage = get_storage()
    for key in keys:
        decision = storage.hit(*key, "read").decision
        assert decision.remaining == 2
        assert storage.give_back(*key, "read", 1, decision)
        assert storage.peek(*key, "read").decision.remaining == 3
    assert_no_errors(on_cluster)


def test_the_api_on_a_cluster(on_cluster, api):
    statuses = [api.get("/api/items/").status_code for _ in range(61)]
    assert statuses == [200] * 60 + [429]
    assert_no_errors(on_cluster)


def test_an_unreachable_cluster_fails_open_fast(settings, api, db):
    settings.RATELIMIT_TIERS_STORAGE = CLUSTER_STORAGE
    settings.RATELIMIT_TIERS_REDIS_CLUSTER = "redis://127.0.0.1:1"  # Nothing listens on port 1.
    started = time.monotonic()
    responses = [api.get("/api/items/") for _ in range(10)]
    elapsed = time.monotonic() - started
    assert {r.status_code for r in responses} == {200}
    assert not any("X-RateLimit-Limit" in r for r in responses)
    print(f"\n10 requests with the cluster unreachable: {elapsed * 1000:.0f} ms")
    assert elapsed < 5  # redis-py's default retries alone would take seconds per request.


def test_settings_as_keyword_arguments(on_cluster, settings, account):
    settings.RATELIMIT_TIERS_REDIS_CLUSTER = {"startup_nodes": [("127.0.0.1", on_cluster[1].port)]}
    key = make_keys(account, 1, 2)[0]
    storage = get_storage()
    assert [storage.hit(*key, "read").decision.allowed for _ in range(3)] == [True, True, False]


def test_a_key_prefix_with_braces_is_refused(on_cluster, settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "KEY_PREFIX": "{app}"}
    }
    with pytest.raises(ImproperlyConfigured):
        get_storage().make_key("rlt:{abc}:policy")


@pytest.mark.parametrize(
    ("key", "tag"),
    [(":1:rlt:{abc}:policy", "abc"), ("no-tag", "no-tag"), ("{}x{y}", "{}x{y}"), ("a{b", "a{b")],
)
def test_hash_tag(key, tag):
    assert hash_tag(key) == tag


def test_account_pools_on_every_master_never_cross_slots(on_cluster, free_tier):
    # Every key of an account, and the account's shared pool, carry the account's hash tag:
    # one check's keys share a slot wherever the account lives.
    set_rule(free_tier, "5/h", scope="account")
    storage = get_storage()
    accounts = [Account.objects.create(name=f"pool{n}", tier=free_tier) for n in range(40)]
    by_master = {}
    for account in accounts:
        master = node_of(on_cluster, storage.make_key(policy_key(account_tag(account.pk), "x")))
        by_master.setdefault(master, account)
    assert len(by_master) == 3
    for account in by_master.values():
        prefixes = [APIKey.objects.create_key(account=account, name=f"k{n}")[0].prefix for n in range(3)]
        # Each key could do 60 a minute; together they get the account's 5.
        assert sum(storage.hit(p, account.pk, "read").allowed for _ in range(3) for p in prefixes) == 5
    assert_no_errors(on_cluster)


def test_the_usage_ledger_on_every_master(on_cluster, account):
    keys = make_keys(account, 12, 2)
    storage = get_storage()
    for prefix, owner in keys:
        for _ in range(3):
            storage.hit(prefix, owner, "read")
    # Refusals served from a process's memory, sent without a check (its flush).
    prefix, owner = keys[0]
    refusal = storage.hit(prefix, owner, "read").decision
    tally.add(prefix, owner, "read", refusal)
    tally.add(prefix, owner, "read", refusal)
    assert tally_flush.flush() == 1
    now = datetime.now(timezone.utc)
    rows = usage.hourly(now - timedelta(hours=2), now + timedelta(hours=2))
    assert len({node_of(on_cluster, policy_of(storage, key)) for key in keys}) == 3  # Read from each master.
    assert sorted((row.prefix, row.admitted, row.refused) for row in rows) == sorted(
        (prefix, 2, 4 if (prefix, owner) == keys[0] else 1) for prefix, owner in keys
    )
    assert_no_errors(on_cluster)
