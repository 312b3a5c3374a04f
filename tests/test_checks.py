from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core import checks

from ratelimit_tiers import checks as rlt_checks

#: Every check this app can report; each ID names one problem and is never reused.
CHECK_IDS = {
    *(f"E{n:03d}" for n in range(1, 17)),
    *(f"E{n:03d}" for n in range(20, 24)),
    *("W001", "W002", "W003", "W005", "W020"),
}


def check_ids():
    return sorted(m.id for m in checks.run_checks() if m.id and m.id.startswith("ratelimit_tiers"))


def test_demo_settings_are_clean(settings):
    settings.SILENCED_SYSTEM_CHECKS = []
    assert check_ids() == ["ratelimit_tiers.W001"]  # LocMem is per process.


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CACHE", 5, "E001"),
        ("CACHE", "nope", "E002"),
        ("FAIL_OPEN", "yes", "E003"),
        ("ALGORITHM", "fixed", "E004"),
        ("KEY_HEADER", "", "E005"),
        ("KEY_KEYWORD", None, "E006"),
        ("POLICY_TIMEOUT", 0, "E007"),
        ("POLICY_TIMEOUT", True, "E007"),
        ("STORAGE", "os.path", "E008"),
        ("STORAGE", "no.such.Module", "E008"),
    ],
)
def test_bad_settings_are_errors(settings, name, value, expected):
    setattr(settings, f"RATELIMIT_TIERS_{name}", value)
    assert f"ratelimit_tiers.{expected}" in check_ids()


def test_custom_storage_path_is_accepted(settings):
    settings.RATELIMIT_TIERS_STORAGE = "ratelimit_tiers.storage.cache.CacheStorage"
    assert not [i for i in check_ids() if i.startswith("ratelimit_tiers.E")]


def test_dummy_cache_is_an_error(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    assert "ratelimit_tiers.E009" in check_ids()


def test_missing_middleware_is_a_warning(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "ratelimit_tiers" not in m]
    assert "ratelimit_tiers.W002" in check_ids()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("BREAKER_FAILURES", -1, "E010"),
        ("BREAKER_FAILURES", "3", "E010"),
        ("BREAKER_COOLDOWN", 0, "E011"),
        ("BREAKER_COOLDOWN", True, "E011"),
        ("INVALID_KEY_RATE", "lots", "E012"),
        ("INVALID_KEY_RATE", "0/min", "E012"),
        ("INVALID_KEY_RATE", 60, "E012"),
        ("TRUSTED_PROXIES", -1, "E013"),
        ("TRUSTED_PROXIES", "1", "E013"),
        ("REDIS_CLUSTER", 7000, "E014"),
        ("STORAGE", "ratelimit_tiers.storage.cluster.RedisClusterStorage", "E015"),
        ("LOCAL_REFUSAL_SECONDS", -1, "E016"),
        ("LOCAL_REFUSAL_SECONDS", "1", "E016"),
        ("LOCAL_REFUSAL_SECONDS", True, "E016"),
        ("LOCAL_REFUSAL_SECONDS", float("nan"), "E016"),
    ],
)
def test_bad_resilience_settings_are_errors(settings, name, value, expected):
    setattr(settings, f"RATELIMIT_TIERS_{name}", value)
    assert f"ratelimit_tiers.{expected}" in check_ids()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BREAKER_FAILURES", 0),
        ("BREAKER_COOLDOWN", 0.5),
        ("INVALID_KEY_RATE", None),
        ("INVALID_KEY_RATE", "100/10s"),
        ("TRUSTED_PROXIES", 2),
        ("REDIS_CLUSTER", {"startup_nodes": [("127.0.0.1", 7000)]}),
        ("LOCAL_REFUSAL_SECONDS", 0),
        ("LOCAL_REFUSAL_SECONDS", 0.5),
    ],
)
def test_good_resilience_settings_pass(settings, name, value):
    setattr(settings, f"RATELIMIT_TIERS_{name}", value)
    assert not [i for i in check_ids() if i.startswith("ratelimit_tiers.E")]


@pytest.mark.parametrize(
    ("options", "warned"),
    [
        ({}, True),
        ({"SOCKET_TIMEOUT": 0.1}, True),
        ({"SOCKET_CONNECT_TIMEOUT": 0.1}, True),
        ({"SOCKET_CONNECT_TIMEOUT": 0.1, "SOCKET_TIMEOUT": 0.1}, False),
    ],
)
def test_redis_without_timeouts_is_a_warning(settings, options, warned):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": options,
        }
    }
    assert ("ratelimit_tiers.W003" in check_ids()) is warned


@pytest.mark.parametrize(
    ("options", "warned"),
    [
        (None, True),
        ({"socket_timeout": 0.1}, True),
        ({"socket_connect_timeout": 0.1}, True),
        ({"SOCKET_CONNECT_TIMEOUT": 0.1, "SOCKET_TIMEOUT": 0.1}, True),  # django-redis's names: ignored.
        ({"socket_connect_timeout": 0.1, "socket_timeout": 0.1}, False),
    ],
)
def test_djangos_own_redis_cache_without_timeouts_is_a_warning(settings, options, warned):
    # Django's backend passes OPTIONS to redis-py's connection pool, under redis-py's names.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": ["redis://127.0.0.1:1/0", "redis://127.0.0.1:2/0"],
            **({} if options is None else {"OPTIONS": options}),
        }
    }
    messages = [m for m in checks.run_checks() if m.id == "ratelimit_tiers.W003"]
    assert bool(messages) is warned
    if messages:
        assert '"socket_connect_timeout": 0.1, "socket_timeout": 0.1' in messages[0].hint


def test_each_check_id_is_one_problem_and_documented():
    source = Path(rlt_checks.__file__).read_text()
    numbered = [f"E{int(n):03d}" for n in re.findall(r"\berror\((\d+),", source)]
    named = re.findall(r'id="ratelimit_tiers\.([EW]\d{3})"', source)
    assert sorted(numbered + named) == sorted(CHECK_IDS)  # No ID twice, none missing.
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme[readme.index("### System checks") : readme.index("## Usage")]
    documented = set()
    for low, high in re.findall(r"`([EW]\d{3})`(?:\.\.\.`([EW]\d{3})`)?", table):
        documented |= {f"{low[0]}{n:03d}" for n in range(int(low[1:]), int((high or low)[1:]) + 1)}
    assert documented == CHECK_IDS
