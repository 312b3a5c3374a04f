"""Limits as data, tried as a client of the testproject would: costs, categories, quotas, overrides.

Each test runs on the embedded default (LocMem, the counter) and on a real Redis (the exact log).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from ratelimit_tiers.rules import DAY, period_bounds
from testproject.views import ItemExportView
from tests.conftest import URL, set_rule

EXPORT = "/api/items/export/"
SEARCH = "/api/items/search/"


def test_an_export_costs_10_of_free_tiers_60(backend, api):
    admitted = [api.get(EXPORT) for _ in range(6)]
    assert [r.status_code for r in admitted] == [200] * 6
    assert [r["X-RateLimit-Remaining"] for r in admitted] == ["50", "40", "30", "20", "10", "0"]
    refused = api.get(EXPORT)
    assert refused.status_code == 429
    assert (refused.json()["code"], refused.json()["policy"]) == ("rate_limited", "all-60s")
    # Export counts in read, where a request of cost 1 has no room either.
    assert api.get(URL).status_code == 429


def test_a_cost_more_than_a_rule_admits_is_403_never_429(backend, api, monkeypatch):
    monkeypatch.setattr(ItemExportView, "get_ratelimit_cost", lambda self, request: 61, raising=False)
    for _ in range(2):  # Every time: no wait would ever admit it.
        response = api.get(EXPORT)
        assert response.status_code == 403
        assert response.json() == {
            "code": "cost_exceeds_limit",
            "detail": "This request costs 61, more than the 60 a period of rule all-60s admits.",
            "cost": 61,
            "limit": 60,
            "policy": "all-60s",
        }
        assert "Retry-After" not in response
    assert api.get(URL)["X-RateLimit-Remaining"] == "59"  # Nothing was counted.


def test_search_has_its_own_rule_beside_read(backend, api, free_tier):
    set_rule(free_tier, "10/min", category="search")
    searches = [api.get(SEARCH, {"q": "widget"}) for _ in range(10)]
    assert {r.status_code for r in searches} == {200}
    assert searches[-1]["X-RateLimit-Limit"] == "10"
    refused = api.get(SEARCH, {"q": "widget"})
    assert refused.status_code == 429
    assert refused.json()["policy"] == "search-60s"
    read = api.get(URL)
    assert read.status_code == 200
    assert (read["X-RateLimit-Limit"], read["X-RateLimit-Remaining"]) == ("60", "59")


def test_a_day_quota_refuses_until_midnight_in_the_quota_time_zone(backend, api, free_tier, settings):
    settings.RATELIMIT_TIERS_IETF_HEADERS = True
    settings.RATELIMIT_TIERS_QUOTA_TIMEZONE = "Pacific/Kiritimati"  # UTC+14: its midnight is not UTC's.
    set_rule(free_tier, "5/day")
    admitted = [api.get(URL) for _ in range(5)]
    assert {r.status_code for r in admitted} == {200}
    assert admitted[0]["RateLimit-Policy"] == '"all-60s";q=60;w=60, "all-day";q=5;w=86400'
    # X-RateLimit-* describe the rule with the fewest requests remaining: the day's.
    assert [r["X-RateLimit-Remaining"] for r in admitted] == ["4", "3", "2", "1", "0"]
    assert {r["X-RateLimit-Limit"] for r in admitted} == {"5"}
    assert admitted[-1]["RateLimit"].startswith('"all-60s";r=55;t=')
    assert ', "all-day";r=0;t=' in admitted[-1]["RateLimit"]
    midnight = period_bounds(DAY, time.time(), ZoneInfo("Pacific/Kiritimati"))[1]
    refused = api.get(URL)
    assert refused.status_code == 429
    body = refused.json()
    assert (body["code"], body["policy"], body["limit"]) == ("quota_exceeded", "all-day", 5)
    assert body["reset"] == int(refused["X-RateLimit-Reset"]) == midnight
    assert refused["Retry-After"] == str(body["retry_after"])
    # The refusing rule's t is its wait; the minute rule, which admits, says when it grows.
    assert refused["RateLimit-Policy"] == '"all-60s";q=60;w=60, "all-day";q=5;w=86400'
    minute, day = refused["RateLimit"].split(", ")
    assert day == f'"all-day";r=0;t={body["retry_after"]}'
    assert minute.startswith('"all-60s";r=55;t=')


def test_a_temporary_override_ends_by_itself(backend, api, account):
    until = datetime.now(timezone.utc) + timedelta(seconds=2)
    set_rule(account, "5000/min", category="read", until=until)
    during = api.get(URL)
    assert (during["X-RateLimit-Limit"], during["X-RateLimit-Remaining"]) == ("5000", "4999")
    # No action: the store keeps the policy no longer than the override lasts.
    deadline = time.monotonic() + 30
    limits = []
    while time.monotonic() < deadline and (not limits or limits[-1] != "60"):
        time.sleep(0.25)
        limits.append(api.get(URL)["X-RateLimit-Limit"])
    assert limits[-1] == "60"
    assert set(limits[:-1]) <= {"5000"}
    assert datetime.now(timezone.utc) >= until  # Not before its end.
