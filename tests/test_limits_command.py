"""``manage.py ratelimit_tiers_limits``: show, set and remove rules; every bad input changes nothing."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.db.models import Q
from django.db.models.signals import post_save
from django.utils import timezone

from ratelimit_tiers.management.commands.ratelimit_tiers_limits import Command
from ratelimit_tiers.models import LimitRule, Tier
from tests.conftest import URL, set_rule

COMMAND = "ratelimit_tiers_limits"


def run(*args):
    out, err = StringIO(), StringIO()
    call_command(COMMAND, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def table(out):
    """The rows under the header, each as its columns."""
    header, *rows = out.splitlines()
    assert header.split() == ["rule", "rate", "category", "counted", "per", "algorithm", "origin", "until"]
    return [row.split() for row in rows]


def snapshot():
    return sorted(
        LimitRule.objects.values_list(
            "tier__name",
            "account__name",
            "category",
            "count",
            "window_seconds",
            "calendar",
            "scope",
            "algorithm",
            "until",
        ),
        key=repr,
    )


def test_show_a_tier(db):
    out, _ = run("show", "free")  # Any case, as ratelimit_tiers_create_key --tier.
    assert table(out) == [["all-60s", "60/min", "all", "key", "exact", "tier", "-"]]


def test_set_adds_then_replaces_a_tier_rule_and_the_next_request_sees_it(api, free_tier):
    assert api.get(URL)["X-RateLimit-Limit"] == "60"
    out, _ = run("set", "Free", "1000/day")
    assert out.strip() == "Added to tier Free: all-day 1000/day."
    out, _ = run("set", "Free", "100/min")
    assert out.strip() == "Changed in tier Free: all-60s 60/min -> all-60s 100/min."
    out, _ = run(
        "set", "Free", "10/min", "--category", "search", "--scope", "account", "--algorithm", "counter"
    )
    assert out.strip() == "Added to tier Free: search-60s-account 10/min (counter)."
    assert table(run("show", "Free")[0]) == [
        ["all-60s", "100/min", "all", "key", "exact", "tier", "-"],
        ["all-day", "1000/day", "all", "key", "quota", "tier", "-"],
        ["search-60s-account", "10/min", "search", "account", "counter", "tier", "-"],
    ]
    # Saved through the model: the key's cached policy is evicted, the next request meets the new rules.
    response = api.get(URL)
    assert response["X-RateLimit-Limit"] == "100"


def test_account_override_with_an_end_shows_origin_and_until(api, account):
    until = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    out, _ = run("set", "--account", "acme", "5000/min", "--category", "read", "--until", until.isoformat())
    assert out.strip() == f"Added to account acme: read-60s 5000/min until {until.isoformat()}."
    assert api.get(URL)["X-RateLimit-Limit"] == "5000"
    run("set", "--account", "acme", "50/day", "--scope", "account")
    assert table(run("show", "--account", "acme")[0]) == [
        ["all-day-account", "50/day", "all", "account", "quota", "account", "-"],
        ["all-60s", "60/min", "all", "key", "exact", "tier", "-"],
        ["read-60s", "5000/min", "read", "key", "exact", "account", until.isoformat()],
    ]
    rule = LimitRule.objects.get(account=account, category="read")
    assert (rule.until, rule.count) == (until, 5000)


def test_show_an_account_names_its_ended_overrides(account):
    set_rule(account, "5000/min", category="read", until=timezone.now() - timedelta(seconds=1))
    out, err = run("show", "--account", "acme")
    assert table(out) == [["all-60s", "60/min", "all", "key", "exact", "tier", "-"]]
    assert "Ended override, no longer applied: read-60s 5000/min until" in err


def test_show_without_rules(db):
    Tier.objects.create(name="Open")
    assert run("show", "Open")[0].strip() == "No rules: the requests of tier Open are not limited."


@pytest.mark.parametrize("period", ["/day", "1000/day", "500/day", "day"])
def test_remove_by_period_whatever_the_count(free_tier, period):
    set_rule(free_tier, "1000/day")
    set_rule(free_tier, "1000/day", category="search")
    out, _ = run("remove", "Free", period)
    assert out.strip() == "Removed from tier Free: all-day 1000/day."
    assert set(LimitRule.objects.filter(tier=free_tier).values_list("category", "calendar")) == {
        ("", ""),
        ("search", "day"),
    }


def test_remove_with_category_and_scope_and_an_account_override(account, free_tier):
    set_rule(free_tier, "10/min", category="search", scope="account")
    set_rule(account, "5/10s", category="search")
    assert run("remove", "Free", "/min", "--category", "search", "--scope", "account")[0].strip() == (
        "Removed from tier Free: search-60s-account 10/min."
    )
    assert run("remove", "--account", "acme", "/10s", "--category", "search")[0].strip() == (
        "Removed from account acme: search-10s 5/10s."
    )
    assert list(LimitRule.objects.filter(Q(tier=free_tier) | Q(account=account)).values_list("category")) == [
        ("",)
    ]


BAD = [
    (("set", "Free", "1000/dya"), "invalid rate '1000/dya'"),
    (("set", "Free", "0/min"), "COUNT at least 1"),
    (("set", "Nope", "1/s"), "Unknown tier 'Nope'. Tiers: Free, Basic, Pro, Enterprise."),
    (("set", "--account", "nobody", "1/s"), "Unknown account 'nobody'."),
    (("set", "Free", "1/s", "--category", "Auth"), "category: Lowercase letters"),
    (("set", "Free", "1/s", "--category", "has space"), "category: Lowercase letters"),
    (("set", "Free", "1/s", "--category", "all"), "category: 'all' names the rules of every category"),
    (("set", "Free", "1/s", "--until", "2099-01-01T00:00:00Z"), "--until is for an account's override"),
    (("set", "--account", "acme", "1/s", "--until", "tomorrow"), "is not an ISO 8601 time"),
    (("set", "--account", "acme", "1/s", "--until", "2001-01-01T00:00:00Z"), "has passed"),
    (("set", "Free", "1000/day", "--algorithm", "exact"), "algorithm: A calendar quota is a counter"),
    (("set", "Free", "1/s", "--algorithm", "fast"), "invalid choice: 'fast'"),
    (("set", "Free", "1/s", "--scope", "team"), "invalid choice: 'team'"),
    (("set", "Free", "1/s", "--account", "acme"), "Name a TIER, or an account with --account NAME"),
    (("set",), "the following arguments are required: RATE"),
    (("show",), "Name a TIER, or an account with --account NAME"),
    (("show", "Nope"), "Unknown tier 'Nope'"),
    (("remove", "Free", "/day"), "The tier Free has no rule all-day. Its rules: all-60s."),
    (("remove", "Free", "/min", "--category", "read"), "has no rule read-60s"),
    (("remove", "Free", "/min", "--scope", "account"), "has no rule all-60s-account"),
    (("remove", "--account", "acme", "/min"), "The account acme has no rule all-60s. Its rules: none."),
    (("remove", "Free", "/fortnight"), "invalid rate '1/fortnight'"),
    (("frobnicate", "Free"), "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(args) for args, _ in BAD])
def test_bad_input_is_a_command_error_and_changes_nothing(account, args, message):
    before = snapshot()
    with pytest.raises(CommandError) as excinfo:
        run(*args)
    assert message in str(excinfo.value)
    assert snapshot() == before


def test_a_command_error_exits_with_status_1(account, capsys, monkeypatch):
    # run_from_argv closes every database connection when it ends, as a process about to exit
    # does; on PostgreSQL that would close the test's own transaction under it.
    monkeypatch.setattr(connections, "close_all", lambda: None)
    before = snapshot()
    with pytest.raises(SystemExit) as excinfo:
        Command().run_from_argv(["manage.py", COMMAND, "set", "Free", "1000/dya"])
    assert excinfo.value.code == 1
    assert "invalid rate" in capsys.readouterr().err
    assert snapshot() == before


def test_a_failure_after_the_write_rolls_it_back(account):
    """Written, then failing (here in a receiver of post_save): the transaction leaves no half change."""

    def boom(**kwargs):
        raise RuntimeError("injected")

    before = snapshot()
    post_save.connect(boom, sender=LimitRule, dispatch_uid="test_boom")
    try:
        with pytest.raises(RuntimeError):
            run("set", "Free", "1000/day")
        with pytest.raises(RuntimeError):
            run("set", "Free", "30/min")
    finally:
        post_save.disconnect(dispatch_uid="test_boom", sender=LimitRule)
    assert snapshot() == before


@pytest.mark.parametrize("action", ["", "show", "set", "remove"])
def test_help_explains_rates_and_identity(action, capsys):
    with pytest.raises(SystemExit):
        call_command(COMMAND, *([action] if action else []), "--help")
    text = " ".join(capsys.readouterr().out.split())
    expected = {
        "": ["identified by its category, its period and its scope", "{show,set,remove}"],
        "show": ["with their origin (tier or account) and the end of each override"],
        "set": ["identified by its category, its period and its scope", "1000/day, 5000/week, 100000/month"],
        "remove": ["'remove Free /day' and 'remove Free 1000/day' both remove", "whatever its count"],
    }
    for phrase in expected[action]:
        assert phrase in text
