"""RedisStorage through django-redis's SentinelClient: a real master, replica and sentinel.

The failover test kills the master under load through gunicorn and prints what it saw
(run with ``-s``); it asserts zero 5xx and exact limiting after the failover.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ratelimit_tiers.models import APIKey
from ratelimit_tiers.storage import get_storage
from ratelimit_tiers.storage.redis import RedisStorage
from tests.conftest import RedisServer, free_port, set_rule
from tests.processes import Load, ProjectServer, burst, percentiles, recovered_after

pytestmark = pytest.mark.redis

SERVICE = "mymaster"
NO_RETRY = Retry(NoBackoff(), 0)


class Sentinel:
    """``redis-server <conf> --sentinel`` watching one master with quorum 1."""

    def __init__(self, directory, master_port):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server")
        self.port = free_port()
        conf = directory / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        self.process = subprocess.Popen(
            [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: self.client().ping(), "sentinel to start")

    def client(self):
        return Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)

    def master_port(self):
        with self.client() as client:
            return int(client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", SERVICE)[1])

    def kill(self):
        self.process.kill()
        self.process.wait()


def wait_for(predicate, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        except Exception as exc:  # redis errors while things start
            if "Connection" not in type(exc).__name__ and "Busy" not in type(exc).__name__:
                raise
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


@pytest.fixture
def sentinel_setup(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "r").mkdir()
    (tmp_path / "s").mkdir()
    master = RedisServer(tmp_path / "m")
    replica = RedisServer(tmp_path / "r", "--replicaof", "127.0.0.1", str(master.port))
    sentinel = Sentinel(tmp_path / "s", master.port)

    def replica_ready():
        with Redis(port=replica.port) as client:
            return client.info("replication")["master_link_status"] == "up"

    def sentinel_sees_replica():
        with sentinel.client() as client:
            replicas = client.execute_command("SENTINEL REPLICAS", SERVICE)
        return any(str(replica.port) in str(r) and "s_down" not in str(r) for r in replicas)

    wait_for(replica_ready, "the replica to sync")
    wait_for(sentinel_sees_replica, "the sentinel to discover the replica")
    yield master, replica, sentinel
    sentinel.kill()
    replica.kill()
    master.kill()


def cache_settings(sentinel_port):
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://{SERVICE}/0",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                "SENTINELS": [("127.0.0.1", sentinel_port)],
                "SENTINEL_KWARGS": {"socket_timeout": 0.1, "socket_connect_timeout": 0.1, "retry": NO_RETRY},
                "SOCKET_CONNECT_TIMEOUT": 0.1,
                "SOCKET_TIMEOUT": 0.1,
            },
        }
    }


def test_exact_through_the_sentinel_client(sentinel_setup, settings, account):
    _master, _replica, sentinel = sentinel_setup
    settings.CACHES = cache_settings(sentinel.port)
    set_rule(account, 100)
    prefix = APIKey.objects.create_key(account=account, name="s")[0].prefix
    storage = get_storage()
    assert type(storage) is RedisStorage
    assert storage.peek(prefix, account.pk, "read").decision.remaining == 100
    admitted = []
    lock = threading.Lock()

    def hit(_):
        if storage.hit(prefix, account.pk, "read").decision.allowed:
            with lock:
                admitted.append(1)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(hit, range(300)))
    assert len(admitted) == 100


SETTINGS = """
from redis.backoff import NoBackoff
from redis.retry import Retry
NO_RETRY = Retry(NoBackoff(), 0)
CACHES = %s
DEBUG = False
RATELIMIT_TIERS_FAIL_OPEN = True
"""


def test_master_killed_under_load_fails_over_with_zero_5xx(sentinel_setup, tmp_path):
    master, replica, sentinel = sentinel_setup
    caches = repr(cache_settings(sentinel.port)).replace(repr(NO_RETRY), "NO_RETRY")
    project = ProjectServer(tmp_path, SETTINGS % caches, workers=3)
    try:
        keys = project.create_keys(("load", "Enterprise", 10_000_000), ("after-failover", "Free", None))
        project.start()
        load = Load(project.port, keys["load"], threads=6, limit=60)
        try:
            time.sleep(2)
            killed = time.monotonic()
            master.kill()
            wait_for(lambda: sentinel.master_port() == replica.port, "the failover", timeout=30)
            promoted = time.monotonic()
            time.sleep(3)  # The breaker's cool-down (2 s) passes; every worker reconnects.
            statuses = [s.status for s in burst(project.port, keys["after-failover"], 150)]
            assert (statuses.count(200), statuses.count(429)) == (60, 90)
            time.sleep(1)
            end = time.monotonic()
        finally:
            samples = load.stop()
        log = project.log_text()
    finally:
        project.stop()

    before = [s for s in samples if killed - 1 <= s.started < killed]
    during = [s for s in samples if killed <= s.started < promoted]
    after = [s for s in samples if promoted <= s.started < end]
    print(f"\nfailover took {promoted - killed:.1f} s (down-after 1 s)")
    for name, part in (("before", before), ("master dead", during), ("after promotion", after)):
        n = percentiles(part)
        unlimited = sum(not s.limited for s in part)
        fivexx = sum(s.status >= 500 for s in part)
        print(
            f"{name:>16}: n={n['n']:4d} 5xx={fivexx} fail-open={unlimited:4d} "
            f"p50={n['p50']:6.1f} ms p99={n['p99']:6.1f} ms max={n['max']:6.1f} ms"
        )
    recovered = recovered_after(samples, promoted, end)
    print(f"limiting on every worker again {recovered:.1f} s after the promotion")
    statuses = [s.status for s in samples]
    assert statuses.count(0) == 0, "connection errors"
    assert not [s for s in statuses if s >= 500], "5xx in fail-open mode"
    assert set(statuses) == {200}
    assert any(not s.limited for s in during)  # Fail-open covered the gap...
    assert any(s.limited for s in after)  # ...and the promoted replica limits again.
    assert "Traceback" not in log
