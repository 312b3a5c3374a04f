"""Limit rules in the admin: inline on tiers (RATE text) and accounts (overrides with an end), the
effective rules with their origin, the tier list's compact rules, and view-only staff."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from ratelimit_tiers.models import Account, APIKey, LimitRule, Tier
from tests.conftest import URL, key_client, set_rule
from tests.test_admin import staff

TIER_URL = "/admin/ratelimit_tiers/tier/"
ACCOUNT_URL = "/admin/ratelimit_tiers/account/"


def management(prefix, rows, initial):
    return {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
        **{f"{prefix}-{i}-{name}": value for i, row in enumerate(rows) for name, value in row.items()},
    }


def rule_row(rate, category="", scope="key", algorithm="", rule=None, **extra):
    row = {"rate": rate, "category": category, "scope": scope, "algorithm": algorithm, **extra}
    if rule is not None:
        row["id"] = str(rule.pk)
    return row


def post_tier(client, tier, rows, initial):
    data = {"name": tier.name, "description": tier.description, **management("rules", rows, initial)}
    return client.post(f"{TIER_URL}{tier.pk}/change/", data)


def post_account(client, account, rows, initial):
    data = {
        "name": account.name,
        "tier": account.tier_id,
        "is_active": "on",
        **management("rules", rows, initial),
        **management("api_keys", [], 0),
    }
    return client.post(f"{ACCOUNT_URL}{account.pk}/change/", data)


def errors_of(response):
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def rules_of(owner):
    return sorted((r.category, r.count, r.window_seconds, r.calendar, r.scope) for r in owner.rules.all())


def test_tier_inline_adds_and_edits_rules_as_rate_text(admin_client, free_tier, api):
    assert api.get(URL)["X-RateLimit-Limit"] == "60"
    existing = free_tier.rules.get()
    rows = [rule_row("100/min", rule=existing), rule_row("1000/day"), rule_row("10/10s", category="search")]
    response = post_tier(admin_client, free_tier, rows, initial=1)
    assert response.status_code == 302, errors_of(response)
    assert rules_of(free_tier) == [
        ("", 100, 60, "", "key"),
        ("", 1000, 0, "day", "key"),
        ("search", 10, 10, "", "key"),
    ]
    # Saved through the model: the next request meets the new rules.
    assert api.get(URL)["X-RateLimit-Limit"] == "100"
    page = admin_client.get(f"{TIER_URL}{free_tier.pk}/change/").content.decode()
    assert 'value="100/min"' in page and 'value="1000/day"' in page  # Shown back as RATE text.
    assert "all-day" in page  # Each rule's name in headers.


def test_rules_on_a_new_tier(admin_client):
    data = {"name": "Startup", "description": "", **management("rules", [rule_row("5/min")], 0)}
    response = admin_client.post(f"{TIER_URL}add/", data)
    assert response.status_code == 302, errors_of(response)
    assert rules_of(Tier.objects.get(name="Startup")) == [("", 5, 60, "", "key")]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (rule_row("1000/dya"), "Not a rate: 1000/dya. Write COUNT/PERIOD, e.g. 60/min, 100/10s or 1000/day."),
        (rule_row("0/min"), "Not a rate: 0/min."),
        (rule_row("", category="read"), "This field is required."),
        (rule_row("5/min", category="Read"), "Lowercase letters, digits"),
        (
            rule_row("5/min", category="all"),
            "'all' names the rules of every category: leave the category empty.",
        ),
        (
            rule_row("1000/day", algorithm="exact"),
            "A calendar quota is a counter: leave the algorithm empty.",
        ),
        (rule_row("120/2min"), "Two rules for every category, 120s, per key"),
        (rule_row("5/min"), "Two rules for every category, 60s, per key (60/min and 5/min): keep one."),
    ],
)
def test_tier_inline_refuses_bad_rules_and_changes_nothing(admin_client, free_tier, row, message):
    existing = free_tier.rules.get()
    rows = [rule_row("60/min", rule=existing), row]
    if "120s" in message:
        rows.append(rule_row("240/120s"))
    before = rules_of(free_tier)
    response = post_tier(admin_client, free_tier, rows, initial=1)
    assert response.status_code == 200
    assert message in errors_of(response)
    assert "Give a sliding window in seconds" not in errors_of(response)  # Only the rate's own message.
    assert rules_of(free_tier) == before


def test_deleting_a_rule_and_adding_one_of_the_same_identity(admin_client, free_tier):
    existing = free_tier.rules.get()
    rows = [rule_row("60/min", rule=existing, DELETE="on"), rule_row("30/min")]
    response = post_tier(admin_client, free_tier, rows, initial=1)
    assert response.status_code == 302, errors_of(response)
    assert rules_of(free_tier) == [("", 30, 60, "", "key")]


def test_account_overrides_inline_with_an_end(admin_client, account, api):
    until = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    local = timezone.localtime(until)
    rows = [
        rule_row(
            "5000/min",
            category="read",
            until_0=local.strftime("%Y-%m-%d"),
            until_1=local.strftime("%H:%M:%S"),
        )
    ]
    response = post_account(admin_client, account, rows, initial=0)
    assert response.status_code == 302, errors_of(response)
    rule = account.rules.get()
    assert (rule.category, rule.count, rule.window_seconds, rule.until) == ("read", 5000, 60, until)
    assert api.get(URL)["X-RateLimit-Limit"] == "5000"


def test_account_page_shows_effective_rules_with_origin_and_end(admin_client, account, free_tier):
    set_rule(free_tier, "1000/day")
    until = timezone.now() + timedelta(hours=2)
    set_rule(account, "5000/min", category="read", until=until)
    set_rule(account, "2000/day")  # Replaces the tier's, for good.
    set_rule(account, "1/min", category="write", until=timezone.now() - timedelta(seconds=1))  # Ended.
    page = admin_client.get(f"{ACCOUNT_URL}{account.pk}/change/").content.decode()
    table = re.search(r'<table class="rlt-rules">.*?</table>', page, re.S).group(0)
    header = re.findall(r"<th>(.*?)</th>", table)
    assert header == ["rule", "rate", "category", "counted per", "algorithm", "origin", "until"]
    rows = [
        re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r'<tr class="rlt-rule">(.*?)</tr>', table)
    ]
    end = timezone.localtime(until).isoformat(timespec="seconds")
    assert rows == [
        ["all-60s", "60/min", "all", "key", "exact", "tier", "-"],
        ["all-day", "2000/day", "all", "key", "quota", "account", "-"],
        ["read-60s", "5000/min", "read", "key", "exact", "account", end],
    ]


def test_tier_list_shows_each_tiers_rules_compactly(admin_client, free_tier):
    set_rule(free_tier, "1000/day")
    set_rule(free_tier, "10/min", category="search", scope="account")
    page = admin_client.get(TIER_URL).content.decode()
    assert "60/min · 1000/day · search 10/min per account" in page
    assert '<td class="field-limits">300/min</td>' in page  # Basic, seeded.


def test_key_page_shows_each_rule_per_category(admin_client, free_tier, account, raw_key):
    set_rule(free_tier, "1000/day")
    set_rule(free_tier, "10/min", category="search")
    api = key_client(raw_key)
    for _ in range(3):
        assert api.get(URL).status_code == 200
    key = APIKey.objects.get()
    page = admin_client.get(f"/admin/ratelimit_tiers/apikey/{key.pk}/change/").content.decode()
    assert "read · all-60s: 3 / 60 used, 57 left, resets in" in page
    assert "read · all-day: 3 / 1000 used, 997 left, resets in" in page
    assert "write · all-60s: 0 / 60 used, 60 left" in page
    assert "search · search-60s: 0 / 10 used, 10 left" in page


@pytest.fixture
def viewer(client, django_user_model):
    user = staff(django_user_model, "viewer", "view_tier", "view_account", "view_limitrule")
    client.force_login(user)
    return client


def test_view_only_staff_see_rules_but_cannot_change_them(viewer, free_tier, account):
    set_rule(account, "5000/min", category="read")
    tier_page = viewer.get(f"{TIER_URL}{free_tier.pk}/change/").content.decode()
    account_page = viewer.get(f"{ACCOUNT_URL}{account.pk}/change/").content.decode()
    rate_cells = [
        re.findall(r'<td class="field-rate">\s*<p>(.*?)</p>', page) for page in (tier_page, account_page)
    ]
    assert rate_cells == [["60/min"], ["5000/min"]]  # They see the rules, as text...
    for page in (tier_page, account_page):
        assert 'name="rules-0-rate"' not in page  # ...not as fields.
    assert "read-60s" in account_page  # The effective rules too.

    # Posting the inline anyway changes nothing.
    before = (rules_of(free_tier), rules_of(account))
    response = post_tier(viewer, free_tier, [rule_row("1/min", rule=free_tier.rules.get())], initial=1)
    assert response.status_code == 403
    response = post_account(
        viewer, account, [rule_row("1/min", category="read", rule=account.rules.get())], 1
    )
    assert response.status_code == 403
    assert (rules_of(free_tier), rules_of(account)) == before


def test_changing_a_tier_without_the_rule_permissions_keeps_the_rules(client, django_user_model, free_tier):
    """A staff member who may change tiers but only view rules edits the tier; the rules stay as they are."""
    user = staff(django_user_model, "editor", "view_tier", "change_tier", "view_limitrule")
    client.force_login(user)
    page = client.get(f"{TIER_URL}{free_tier.pk}/change/").content.decode()
    assert 'name="rules-0-rate"' not in page
    assert re.findall(r'<td class="field-rate">\s*<p>(.*?)</p>', page) == ["60/min"]
    data = {"name": "Free", "description": "changed", **management("rules", [rule_row("1/min")], 0)}
    response = client.post(f"{TIER_URL}{free_tier.pk}/change/", data)
    assert response.status_code == 302
    free_tier.refresh_from_db()
    assert free_tier.description == "changed"
    assert rules_of(free_tier) == [("", 60, 60, "", "key")]
    assert not LimitRule.objects.filter(count=1).exists()
    assert Account.objects.count() == 0


def test_a_new_account_page_and_its_overrides(admin_client, free_tier):
    page = admin_client.get(f"{ACCOUNT_URL}add/")
    assert page.status_code == 200
    assert "Shown once the account is saved." in page.content.decode()
    data = {
        "name": "globex",
        "tier": free_tier.pk,
        "is_active": "on",
        **management("rules", [rule_row("10/s", category="search", scope="account")], 0),
        **management("api_keys", [], 0),
    }
    response = admin_client.post(f"{ACCOUNT_URL}add/", data)
    assert response.status_code == 302, errors_of(response)
    assert rules_of(Account.objects.get(name="globex")) == [("search", 10, 1, "", "account")]
