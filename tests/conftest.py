from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from django.core.cache import caches
from redis import Redis
from rest_framework.test import APIClient

from ratelimit_tiers import breaker
from ratelimit_tiers.identity import identities
from ratelimit_tiers.local_refusals import notes, unknown_prefixes
from ratelimit_tiers.models import Account, APIKey, LimitRule, Tier
from ratelimit_tiers.refusal_tally import tally
from ratelimit_tiers.rules import parse_limit
from ratelimit_tiers.storage.cache import CacheStorage
from tests import postgres

#: The testproject's throttled list endpoint, the one most tests call.
URL = "/api/items/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A real redis-server process on a free loopback port."""

    def __init__(self, directory: Path, *extra: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run scripts/install-system-deps (Debian's redis-server)"
            )
        self.port = free_port()
        self.directory = directory
        self.args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


@pytest.fixture
def redis_cache(redis_server: RedisServer, settings: pytest.FixtureRequest) -> Iterator[str]:
    """Point the default cache at the real Redis, flushed."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_server.url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
    from django_redis import get_redis_connection

    get_redis_connection("default").flushdb()
    yield redis_server.url
    caches["default"].close()


BUILTIN_REDIS_CACHE = "django.core.cache.backends.redis.RedisCache"


@pytest.fixture
def builtin_redis_cache(redis_server: RedisServer, settings: pytest.FixtureRequest) -> Iterator[str]:
    """Point the default cache at the real Redis through Django's own backend, flushed."""
    settings.CACHES = {
        "default": {
            "BACKEND": BUILTIN_REDIS_CACHE,
            "LOCATION": redis_server.url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    with Redis.from_url(redis_server.url) as client:
        client.flushdb()
    yield redis_server.url


@pytest.fixture(params=["django_redis", "builtin"])
def any_redis_cache(request: pytest.FixtureRequest) -> str:
    """The default cache on the real Redis, through django-redis and through Django's own backend."""
    return str(
        request.getfixturevalue("redis_cache" if request.param == "django_redis" else "builtin_redis_cache")
    )


@pytest.fixture
def broken_store(settings: pytest.FixtureRequest) -> str:
    """Keep the default cache, but put counters and policies on a Redis that refuses connections."""
    settings.CACHES = {
        "default": settings.CACHES["default"],
        "broken": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # Nothing listens on port 1: refused at once.
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.1, "SOCKET_TIMEOUT": 0.1},
        },
    }
    settings.RATELIMIT_TIERS_CACHE = "broken"
    return "broken"


def pytest_report_header() -> str:
    return f"database: {postgres.backend()} ({postgres.BACKEND_ENV})"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(request: pytest.FixtureRequest) -> None:
    """With RATELIMIT_TIERS_TEST_DB=postgres, the test database lives on a private cluster."""
    if postgres.backend() == "postgres":
        postgres.use_for_tests()
    request.getfixturevalue("django_db_modify_db_settings_parallel_suffix")


def pytest_unconfigure() -> None:
    postgres.stop()


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    breaker.reset()
    identities.clear()
    notes.clear()
    unknown_prefixes.clear()
    tally.clear()
    caches["default"].clear()
    yield
    identities.clear()
    notes.clear()
    unknown_prefixes.clear()
    tally.clear()


@pytest.fixture
def free_tier(db: None) -> Tier:
    return Tier.objects.get(name="Free")


@pytest.fixture
def account(free_tier: Tier) -> Account:
    return Account.objects.create(name="acme", tier=free_tier)


@pytest.fixture
def raw_key(account: Account) -> str:
    return APIKey.objects.create_key(account=account, name="main")[1]


@pytest.fixture
def api(raw_key: str) -> APIClient:
    return key_client(raw_key)


def set_rule(
    owner: Tier | Account,
    rate: str | int,
    *,
    category: str = "",
    scope: str = "key",
    algorithm: str = "",
    until: datetime | None = None,
) -> LimitRule:
    """Add or replace the ``owner``'s rule for ``rate`` (``"60/min"``, or a count per minute) as an
    operator would: the save evicts the policies it changes."""
    count, window, calendar = parse_limit(rate if isinstance(rate, str) else f"{rate}/min")
    owner_field = "tier" if isinstance(owner, Tier) else "account"
    rule, _created = LimitRule.objects.update_or_create(
        **{owner_field: owner},
        category=category,
        window_seconds=window,
        calendar=calendar,
        scope=scope,
        defaults={"count": count, "algorithm": algorithm, "until": until},
    )
    return rule


def only_rule(owner: Tier | Account, rate: str | int, **options: str) -> LimitRule:
    """Make ``rate`` the ``owner``'s one rule, as a tier's limit columns once were (see :func:`set_rule`)."""
    LimitRule.objects.filter(**{"tier" if isinstance(owner, Tier) else "account": owner}).delete()
    return set_rule(owner, rate, **options)


def key_client(raw_key: str) -> APIClient:
    """A client that sends ``raw_key`` on every request."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return client


@pytest.fixture(params=["locmem", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the embedded default and on a real Redis."""
    if request.param == "redis":
        request.getfixturevalue("redis_cache")
    else:
        # LocMem runs the counter, whose fixed windows turn at each minute: a test
        # that counts exactly must not straddle that edge. Its clock is injectable,
        # so the test's clock starts past the edge instead of waiting it out.
        monkeypatch.setattr(CacheStorage, "timer", staticmethod(clock_clear_of_minute_edge()))
    return str(request.param)


def clock_clear_of_minute_edge(seconds: float = 10) -> Callable[[], float]:
    """A real-time clock that is not in a minute's last ``seconds``: it starts past the edge if near it."""
    now = time.time()
    ahead = 60 - now % 60 + 0.05 if now % 60 > 60 - seconds else 0.0
    return lambda: time.time() + ahead


def clear_of_minute_edge(seconds: float = 10) -> None:
    """Wait out a minute's last ``seconds``: the counter's fixed windows turn at each minute."""
    time.sleep(max(0.0, time.time() % 60 - (60 - seconds)) and 60 - time.time() % 60 + 0.05)
