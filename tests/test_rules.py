"""Limit rules, pure: RATE text, which rules a request meets, and calendar periods."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ratelimit_tiers.rules import (
    ACCOUNT,
    DAY,
    MONTH,
    WEEK,
    Rule,
    applicable,
    effective,
    format_period,
    parse_limit,
    period_bounds,
)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("10/s", (10, 1, "")),
        ("1000/min", (1000, 60, "")),
        ("5000/h", (5000, 3600, "")),
        ("100/10s", (100, 10, "")),
        ("1000/24h", (1000, 86400, "")),
        (" 7 / minutes ", (7, 60, "")),
        ("1000/day", (1000, 0, DAY)),
        ("5000/week", (5000, 0, WEEK)),
        ("100000/month", (100000, 0, MONTH)),
    ],
)
def test_parse_limit(text, parsed):
    assert parse_limit(text) == parsed


@pytest.mark.parametrize(
    "text", ["", "60", "0/min", "x/min", "10/0s", "-1/min", "5/2day", "5/fortnight", "5/d"]
)
def test_parse_limit_rejects_with_the_accepted_forms(text):
    with pytest.raises(ValueError, match=r"expected COUNT/PERIOD, e.g. 10/s, 60/min"):
        parse_limit(text)


@pytest.mark.parametrize(
    ("rule", "rate", "name"),
    [
        (Rule(60, 60), "60/min", "all-60s"),
        (Rule(100, 10, category="search"), "100/10s", "search-10s"),
        (Rule(1000, 86400), "1000/24h", "all-86400s"),
        (Rule(5000, 7200, scope=ACCOUNT), "5000/2h", "all-7200s-account"),
        (Rule(10, calendar=DAY, category="export"), "10/day", "export-day"),
    ],
)
def test_a_rule_reads_as_its_rate_and_is_named_for_its_identity(rule, rate, name):
    assert (rule.rate, rule.name) == (rate, name)
    assert parse_limit(rule.rate)[:2] == (rule.count, rule.window)


def test_format_period_picks_the_largest_whole_unit():
    assert [format_period(w) for w in (1, 45, 60, 90, 3600, 86400)] == ["s", "45s", "min", "90s", "h", "24h"]


def test_an_account_rule_replaces_the_tier_rule_of_its_identity_and_adds_the_others():
    tier = [Rule(60, 60), Rule(1000, calendar=DAY), Rule(10, 60, category="search")]
    account = [Rule(5000, 60, category="read"), Rule(120, 60, origin="account"), Rule(3, 1, scope=ACCOUNT)]
    rules = effective(tier, account, now=0)
    assert {(r.category, r.period, r.scope): r.count for r in rules} == {
        ("", "60s", "key"): 120,
        ("", "day", "key"): 1000,
        ("search", "60s", "key"): 10,
        ("read", "60s", "key"): 5000,
        ("", "1s", "account"): 3,
    }


def test_an_override_applies_until_its_end_and_not_a_moment_later():
    tier, override = [Rule(60, 60)], [Rule(5000, 60, until=100.0)]
    assert [r.count for r in effective(tier, override, now=99.999)] == [5000]
    assert [r.count for r in effective(tier, override, now=100.0)] == [60]


def test_a_category_meets_its_own_rules_and_the_defaults_for_other_periods():
    rules = (
        Rule(60, 60),
        Rule(1000, calendar=DAY),
        Rule(10, 60, category="search"),
        Rule(7, 60, scope=ACCOUNT),
    )
    assert applicable(rules, "search") == (rules[2], rules[1], rules[3])
    # A category no rule names falls under the all-categories rules: never under a limit of 0.
    assert applicable(rules, "export") == (rules[0], rules[1], rules[3])
    assert applicable((), "read") == ()


UTC, PARIS = ZoneInfo("UTC"), ZoneInfo("Europe/Paris")


def at(text, zone=UTC):
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def test_calendar_periods_start_at_midnight_on_mondays_and_on_the_first():
    now = at("2026-12-02 15:30")  # A Wednesday.
    assert period_bounds(DAY, now, UTC) == (at("2026-12-02"), at("2026-12-03"))
    assert period_bounds(WEEK, now, UTC) == (at("2026-11-30"), at("2026-12-07"))
    assert period_bounds(MONTH, now, UTC) == (at("2026-12-01"), at("2027-01-01"))
    assert period_bounds(MONTH, at("2026-01-31 23:59"), UTC) == (at("2026-01-01"), at("2026-02-01"))


def test_calendar_periods_follow_the_time_zone_and_its_daylight_saving_days():
    start, end = period_bounds(DAY, at("2026-03-29 12:00", PARIS), PARIS)  # Clocks go forward at 2:00.
    assert (start, end) == (at("2026-03-29", PARIS), at("2026-03-30", PARIS))
    assert end - start == 23 * 3600
    start, end = period_bounds(DAY, at("2026-10-25 12:00", PARIS), PARIS)
    assert end - start == 25 * 3600
    # 23:30 in Paris is 22:30 UTC: the day is Paris's.
    assert period_bounds(DAY, at("2026-12-02 23:30", PARIS), PARIS)[0] == at("2026-12-02", PARIS)


def test_an_unknown_calendar_is_an_error():
    with pytest.raises(ValueError, match="unknown calendar"):
        period_bounds("year", 0, UTC)
