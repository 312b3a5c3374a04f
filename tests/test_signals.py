from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import checks
from django.utils import timezone

from ratelimit_tiers import last_used
from ratelimit_tiers.models import APIKey
from ratelimit_tiers.signals import quota_low, request_throttled
from ratelimit_tiers.throttling import TierRateThrottle
from tests.conftest import URL, set_rule


@pytest.fixture
def received():
    events = []

    def on_throttled(sender, **kwargs):
        events.append(("throttled", sender, kwargs))

    def on_low(sender, **kwargs):
        events.append(("low", sender, kwargs))

    request_throttled.connect(on_throttled, sender=TierRateThrottle)
    quota_low.connect(on_low, sender=TierRateThrottle)
    yield events
    request_throttled.disconnect(on_throttled, sender=TierRateThrottle)
    quota_low.disconnect(on_low, sender=TierRateThrottle)


def test_throttled_and_quota_low_signals(backend, api, free_tier, received, caplog):
    caplog.set_level("INFO", logger="ratelimit_tiers")
    set_rule(free_tier, 10)
    statuses = [api.get(URL).status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    low = [kwargs for kind, _, kwargs in received if kind == "low"]
    # remaining <= 10% of 10: only the request that left 1, and the one that left 0.
    assert [k["decision"].remaining for k in low] == [1, 0]
    assert {k["tier"] for k in low} == {"Free"}
    [(_kind, sender, throttled)] = [e for e in received if e[0] == "throttled"]
    assert sender is TierRateThrottle
    prefix = APIKey.objects.get().prefix
    assert throttled["prefix"] == prefix
    assert (throttled["tier"], throttled["category"], throttled["shadow"]) == ("Free", "read", False)
    assert throttled["decision"].allowed is False
    assert throttled["request"].path == URL
    [record] = [r for r in caplog.records if "event=throttled" in r.getMessage()]
    assert f"prefix={prefix} tier=Free category=read limit=10 window=60" in record.getMessage()
    assert record.ratelimit["tier"] == "Free"
    assert record.ratelimit["shadow"] is False


def test_ratio_setting_moves_the_threshold(api, free_tier, received, settings):
    settings.RATELIMIT_TIERS_QUOTA_WARNING_RATIO = 0.5
    set_rule(free_tier, 4)
    for _ in range(4):
        api.get(URL)
    assert [k["decision"].remaining for kind, _, k in received if kind == "low"] == [2, 1, 0]


def test_shadow_tier_counts_but_never_refuses(backend, api, free_tier, received, caplog):
    caplog.set_level("INFO", logger="ratelimit_tiers")
    set_rule(free_tier, 2)
    free_tier.shadow = True
    free_tier.save()
    responses = [api.get(URL) for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert [r["X-RateLimit-Remaining"] for r in responses] == ["1", "0", "0", "0"]
    throttled = [k for kind, _, k in received if kind == "throttled"]
    assert [k["shadow"] for k in throttled] == [True, True]
    assert len([r for r in caplog.records if "event=shadow_refusal" in r.getMessage()]) == 2

    # Turning shadow mode off applies on the next request.
    free_tier.shadow = False
    free_tier.save()
    assert api.get(URL).status_code == 429


def test_global_shadow_setting(api, free_tier, settings):
    settings.RATELIMIT_TIERS_SHADOW = True
    set_rule(free_tier, 1)
    assert [api.get(URL).status_code for _ in range(3)] == [200, 200, 200]
    settings.RATELIMIT_TIERS_SHADOW = False
    assert api.get(URL).status_code == 429


def test_a_refusal_takes_its_tier_from_the_stores_answer(backend, api, free_tier, django_assert_num_queries):
    # The store answers the decision with the key's tier and shadow flag: a refusal
    # reads no tier of its own, from the store or the database.
    set_rule(free_tier, 1)
    assert api.get(URL).status_code == 200  # Loads the key's identity and policy.
    throttled = []

    def on_throttled(sender, tier, shadow, **kwargs):
        throttled.append((tier, shadow))

    request_throttled.connect(on_throttled, sender=TierRateThrottle)
    try:
        with django_assert_num_queries(0):
            assert api.get(URL).status_code == 429
    finally:
        request_throttled.disconnect(on_throttled, sender=TierRateThrottle)
    assert throttled == [("Free", False)]


def test_last_used_is_written_at_most_once_a_minute(api):
    key = APIKey.objects.get()
    assert key.last_used is None
    api.get(URL)
    key.refresh_from_db()
    first = key.last_used
    assert first is not None and timezone.now() - first < timedelta(minutes=1)

    # Another process (no memory of its own) sees the shared marker and writes nothing.
    last_used.forget()
    api.get(URL)
    key.refresh_from_db()
    assert key.last_used == first

    # A minute later (the marker expired), one process writes it again.
    from django.core.cache import caches

    caches["default"].delete(f"rlt:{{{key.prefix}}}:used")
    last_used.forget()
    api.get(URL)
    key.refresh_from_db()
    assert key.last_used > first


def test_last_used_skips_a_store_outage(account, raw_key, broken_store):
    prefix = raw_key.split(".")[0]
    key = APIKey.objects.get()
    last_used.record(key.pk, prefix)
    key.refresh_from_db()
    assert key.last_used is None


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SHADOW", "no", "E022"),
        ("QUOTA_WARNING_RATIO", 1.5, "E023"),
        ("QUOTA_WARNING_RATIO", "0.1", "E023"),
        ("SHADOW", True, "W020"),
    ],
)
def test_settings_are_checked(settings, db, name, value, expected):
    setattr(settings, f"RATELIMIT_TIERS_{name}", value)
    assert f"ratelimit_tiers.{expected}" in [m.id for m in checks.run_checks()]
