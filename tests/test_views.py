"""The status view (``GET /api/ratelimit/`` in the testproject): every rule, read without counting."""

from __future__ import annotations

import time
from zoneinfo import ZoneInfo

from rest_framework.test import APIClient

from ratelimit_tiers.models import APIKey
from ratelimit_tiers.rules import DAY, period_bounds
from tests.conftest import URL, key_client, set_rule

STATUS = "/api/ratelimit/"


def rules_of(response):
    """``{(category, rule name): rule state}`` of a status answer."""
    return {(rule["category"], rule["name"]): rule for rule in response.json()["rules"]}


def test_status_lists_each_rule_per_category_and_counts_against_none(backend, api, settings):
    settings.RATELIMIT_TIERS_STATUS_RATE = None  # This test calls it 100 times; the bucket has its own test.
    for _ in range(3):
        assert api.get(URL).status_code == 200
    answers = [api.get(STATUS) for _ in range(100)]
    assert {response.status_code for response in answers} == {200}
    assert not [h for r in answers for h in r.headers if h.lower().startswith("x-ratelimit")]
    read = rules_of(answers[-1])[("read", "all-60s")]
    assert read["rate"] == "60/min" and read["scope"] == "key" and read["quota"] is False
    assert (read["limit"], read["used"], read["remaining"]) == (60, 3, 57)
    assert read["reset"] >= int(time.time())
    assert answers[-1].json()["tier"] == "Free"
    # Every category in use, the testproject's search included, each with its own count.
    assert set(rules_of(answers[-1])) == {
        (category, "all-60s") for category in ("read", "write", "delete", "auth", "search")
    }
    assert rules_of(answers[-1])[("search", "all-60s")]["used"] == 0
    # A hundred status requests later, the key's read count is where three requests left it.
    assert api.get(URL)["X-RateLimit-Remaining"] == "56"


def test_status_shows_quotas_account_pools_and_category_rules(backend, api, account, free_tier, settings):
    settings.RATELIMIT_TIERS_QUOTA_TIMEZONE = "Pacific/Kiritimati"  # UTC+14: its midnight is not UTC's.
    set_rule(free_tier, "5/day")
    set_rule(free_tier, "10/min", category="search", scope="account")
    other = key_client(APIKey.objects.create_key(account=account, name="other")[1])
    assert other.get("/api/items/search/", {"q": "x"}).status_code == 200
    assert api.get("/api/items/search/", {"q": "x"}).status_code == 200
    assert api.get(URL).status_code == 200
    rules = rules_of(api.get(STATUS))
    pool = rules[("search", "search-60s-account")]
    assert (pool["scope"], pool["rate"], pool["used"], pool["remaining"]) == ("account", "10/min", 2, 8)
    # Another scope: the key's all-categories rule still applies to search, beside the pool.
    assert rules[("search", "all-60s")]["used"] == 1
    day = rules[("read", "all-day")]
    midnight = period_bounds(DAY, time.time(), ZoneInfo("Pacific/Kiritimati"))[1]
    assert (day["rate"], day["quota"], day["used"], day["remaining"]) == ("5/day", True, 1, 4)
    assert day["reset"] == midnight
    assert rules[("search", "all-day")]["used"] == 1  # This key's own search: the day quota is per key.
    assert rules[("read", "all-60s")]["used"] == 1


def test_status_requests_have_their_own_bucket(backend, api, settings):
    settings.RATELIMIT_TIERS_STATUS_RATE = "3/min"
    assert [api.get(STATUS).status_code for _ in range(3)] == [200, 200, 200]
    refused = api.get(STATUS)
    assert refused.status_code == 429
    body = refused.json()
    assert (body["code"], body["policy"], body["limit"]) == ("rate_limited", "status", 3)
    assert refused["Retry-After"] == str(body["retry_after"])
    assert 1 <= body["retry_after"] <= 2 * 60  # The counter (LocMem) may wait into the next window.
    # The key's own rules never saw any of it.
    assert api.get(URL)["X-RateLimit-Remaining"] == "59"


def test_status_needs_a_usable_key(db, api, raw_key):
    anonymous = APIClient().get(STATUS)
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "not_authenticated"
    assert anonymous["WWW-Authenticate"] == "Api-Key"
    APIKey.objects.filter(prefix=raw_key.split(".")[0]).revoke()
    revoked = api.get(STATUS)
    assert (revoked.status_code, revoked.json()["code"]) == (401, "revoked")


def test_status_answers_503_while_the_store_is_down(broken_store, api, settings):
    for fail_open in (True, False):
        settings.RATELIMIT_TIERS_FAIL_OPEN = fail_open
        response = api.get(STATUS)
        assert response.status_code == 503
        assert response.json()["code"] == "ratelimit_unavailable"
        assert response["Retry-After"] == "1"


def test_status_of_a_request_without_an_api_key_is_refused_not_a_500(db, admin_user):
    client = APIClient()
    client.force_authenticate(user=admin_user)  # Authenticated, but by no API key: nothing to report.
    response = client.get(STATUS)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
