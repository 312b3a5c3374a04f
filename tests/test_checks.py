from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from django.core import checks
from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from ratelimit_tiers import categories
from ratelimit_tiers import checks as rlt_checks
from ratelimit_tiers.throttling import TierRateThrottle
from tests.conftest import set_rule

# check_views reads the tiers' rules from the database.
pytestmark = pytest.mark.django_db

#: Every check this app can report; each ID names one problem and is never reused.
CHECK_IDS = {
    *(f"E{n:03d}" for n in range(1, 17)),
    *(f"E{n:03d}" for n in range(20, 26)),
    *(f"E{n:03d}" for n in range(30, 33)),
    "E040",
    *("W001", "W002", "W003", "W005", "W020", "W030"),
}


def check_ids():
    return sorted(m.id for m in checks.run_checks() if m.id and m.id.startswith("ratelimit_tiers"))


def test_demo_settings_are_clean(settings):
    settings.SILENCED_SYSTEM_CHECKS = []
    # LocMem is per process; the demo's search view counts under the all-categories rules.
    assert check_ids() == ["ratelimit_tiers.W001", "ratelimit_tiers.W030"]


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
        ("LEDGER_DAYS", -1, "E040"),
        ("LEDGER_DAYS", 1.5, "E040"),
        ("LEDGER_DAYS", True, "E040"),
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


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("QUOTA_TIMEZONE", "Mars/Olympus_Mons", "E024"),
        ("QUOTA_TIMEZONE", "", "E024"),
        ("QUOTA_TIMEZONE", "../etc/passwd", "E024"),
        ("QUOTA_TIMEZONE", 1, "E024"),
        ("STATUS_RATE", "lots", "E025"),
        ("STATUS_RATE", "0/min", "E025"),
        ("STATUS_RATE", 60, "E025"),
    ],
)
def test_bad_limit_settings_are_errors(settings, name, value, expected):
    setattr(settings, f"RATELIMIT_TIERS_{name}", value)
    assert f"ratelimit_tiers.{expected}" in check_ids()


@pytest.mark.parametrize(
    ("name", "value"),
    [("QUOTA_TIMEZONE", "Europe/Paris"), ("STATUS_RATE", None), ("STATUS_RATE", "10/s")],
)
def test_good_limit_settings_pass(settings, name, value):
    setattr(settings, f"RATELIMIT_TIERS_{name}", value)
    assert not [i for i in check_ids() if i.startswith("ratelimit_tiers.E")]


def routed(settings, **attributes):
    """Route one view throttled by TierRateThrottle, with ``attributes``; return its check messages."""

    def get(self, request):
        return Response({})

    view = type("Checked", (APIView,), {"throttle_classes": [TierRateThrottle], "get": get, **attributes})
    urls = types.ModuleType("checked_urls")
    urls.urlpatterns = [path("checked/", view.as_view())]
    settings.ROOT_URLCONF = urls
    messages = checks.run_checks(tags=[checks.Tags.urls])  # The view checks, registered as URL checks.
    return [m for m in messages if m.id and m.id.startswith("ratelimit_tiers")]


@pytest.mark.parametrize("category", ["Auth", "bulk export", "x" * 51, 5])
def test_a_category_no_rule_could_name_is_an_error(settings, category):
    messages = routed(settings, ratelimit_category=category)
    assert [m.id for m in messages if m.id == "ratelimit_tiers.E030"] == ["ratelimit_tiers.E030"]
    assert "Checked.ratelimit_category" in next(m.msg for m in messages if m.id == "ratelimit_tiers.E030")
    assert all(isinstance(name, str) for name in categories.in_use())  # Names only, sortable.


def test_a_category_no_rule_names_is_a_warning_until_a_rule_names_it(settings, free_tier):
    messages = routed(settings, ratelimit_category="search")
    warnings = [m for m in messages if m.id == "ratelimit_tiers.W030"]
    assert len(warnings) == 1
    assert "'search'" in warnings[0].msg and ".Checked" in warnings[0].msg
    assert not [m for m in messages if m.id == "ratelimit_tiers.E030"]
    set_rule(free_tier, "10/min", category="search")
    assert "ratelimit_tiers.W030" not in [m.id for m in routed(settings, ratelimit_category="search")]


def test_builtin_categories_of_methods_are_not_warned_about(settings):
    assert routed(settings) == []


@pytest.mark.parametrize("cost", [0, -1, "10", 2.5, True, None])
def test_a_cost_that_is_not_a_whole_number_of_at_least_one_is_an_error(settings, cost):
    assert "ratelimit_tiers.E031" in [m.id for m in routed(settings, ratelimit_cost=cost)]


def test_a_cost_more_than_a_rule_admits_is_an_error(settings, free_tier):
    assert routed(settings, ratelimit_cost=60) == []  # Free: 60/min, the smallest seeded rule.
    messages = routed(settings, ratelimit_cost=61)
    assert [m.id for m in messages] == ["ratelimit_tiers.E032"]
    assert "Free all-60s (60/min)" in messages[0].msg
    assert "Basic" not in messages[0].msg  # 300/min admits it.
    # Only the rules its category meets: a search rule does not apply to a read view.
    set_rule(free_tier, "5/min", category="search")
    assert routed(settings, ratelimit_cost=10) == []
    messages = routed(settings, ratelimit_cost=10, ratelimit_category="search")
    assert "Free search-60s (5/min)" in messages[0].msg


def test_a_cost_computed_per_request_is_not_checked(settings):
    assert routed(settings, ratelimit_cost=0, get_ratelimit_cost=lambda self, request: 1) == []


def test_check_runs_before_migrate_and_reads_the_rules_after(tmp_path):
    """``manage.py check`` on a database without tables: the view checks skip the rules, no crash."""
    unset = {"DJANGO_SETTINGS_MODULE", "REDIS_URL"}
    env = {name: value for name, value in os.environ.items() if name not in unset}
    env.update(DJANGO_DB_ENGINE="sqlite3", DJANGO_DB=str(tmp_path / "fresh.sqlite3"))
    root = Path(__file__).resolve().parent.parent

    def manage(*args):
        command = [sys.executable, "manage.py", *args]
        return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)

    before = manage("check")
    assert before.returncode == 0, before.stderr
    assert "W030" not in before.stdout + before.stderr
    assert manage("migrate", "-v0").returncode == 0
    after = manage("check")
    assert after.returncode == 0, after.stderr
    assert "ratelimit_tiers.W030" in after.stdout + after.stderr


def test_a_viewset_actions_own_category_and_cost_are_checked(settings, free_tier):
    from rest_framework import viewsets
    from rest_framework.decorators import action
    from rest_framework.routers import SimpleRouter

    class Things(viewsets.ViewSet):
        throttle_classes = [TierRateThrottle]
        # DRF takes an @action's keywords only for attributes the class has.
        ratelimit_category = None
        ratelimit_cost = 1

        def list(self, request):
            return Response([])

        @action(detail=False, ratelimit_category="Bulk")
        def bulk(self, request):
            return Response([])

        @action(detail=False, ratelimit_cost=100)
        def dump(self, request):
            return Response([])

        @action(detail=False, ratelimit_category="reports")
        def report(self, request):
            return Response([])

    router = SimpleRouter()
    router.register("things", Things, basename="things")
    urls = types.ModuleType("viewset_urls")
    urls.urlpatterns = router.urls
    settings.ROOT_URLCONF = urls
    messages = {m.id: m.msg for m in checks.run_checks(tags=[checks.Tags.urls]) if "ratelimit" in m.id}
    assert set(messages) == {"ratelimit_tiers.E030", "ratelimit_tiers.E032", "ratelimit_tiers.W030"}
    assert ".Things.bulk.ratelimit_category 'Bulk'" in messages["ratelimit_tiers.E030"]
    assert ".Things.dump.ratelimit_cost 100" in messages["ratelimit_tiers.E032"]
    assert (
        "'reports'" in messages["ratelimit_tiers.W030"]
        and ".Things.report" in messages["ratelimit_tiers.W030"]
    )
