from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.db.models.signals import pre_save
from django.utils import timezone

from ratelimit_tiers.models import APIKey, LimitRule, Tier
from ratelimit_tiers.rules import applicable
from tests.conftest import set_rule


def test_seeded_tiers(db):
    # Each seeded tier has one rule for all categories, per key, over a sliding minute.
    rules = LimitRule.objects.values_list(
        "tier__name", "category", "count", "window_seconds", "calendar", "scope", "algorithm", "until"
    )
    assert list(rules.order_by("tier__pk")) == [
        ("Free", "", 60, 60, "", "key", "", None),
        ("Basic", "", 300, 60, "", "key", "", None),
        ("Pro", "", 1000, 60, "", "key", "", None),
        ("Enterprise", "", 5000, 60, "", "key", "", None),
    ]
    assert list(Tier.objects.values_list("name", flat=True)) == ["Free", "Basic", "Pro", "Enterprise"]


def test_no_missing_migrations(db):
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_category_limits_fall_back_to_tier_limit(account, free_tier):
    set_rule(free_tier, 5, category="delete")
    assert counts(account.effective_rules(), "delete") == [5]
    assert counts(account.effective_rules(), "read") == [60]


def test_account_rule_replaces_the_tier_rule_of_its_identity(account, free_tier):
    set_rule(free_tier, 10, category="write")
    set_rule(account, 9000)
    # The account's all-categories rule replaces the tier's, not the tier's write rule.
    assert counts(account.effective_rules(), "read") == [9000]
    assert counts(account.effective_rules(), "write") == [10]
    set_rule(account, 9000, category="write")
    assert counts(account.effective_rules(), "write") == [9000]
    origins = {(rule.category, rule.origin) for rule in account.effective_rules()}
    assert origins == {("", "account"), ("write", "account")}


def test_an_account_rule_past_its_until_no_longer_applies(account):
    end = timezone.now() + timedelta(minutes=1)
    set_rule(account, 5000, category="read", until=end)
    assert counts(account.effective_rules(), "read") == [5000]
    assert counts(account.effective_rules(now=end.timestamp()), "read") == [60]


def counts(rules, category):
    return [rule.count for rule in applicable(rules, category)]


def test_only_the_hash_is_stored(account):
    key, raw_key = APIKey.objects.create_key(account=account, name="k")
    secret = raw_key.split(".")[1]
    stored = APIKey.objects.filter(pk=key.pk).values().get()
    assert all(secret not in str(value) for value in stored.values())
    assert key.prefix == raw_key.split(".")[0]
    assert secret not in str(key)
    assert secret not in repr(key)


def test_revocation_is_final(account):
    key, _ = APIKey.objects.create_key(account=account, name="k")
    key.revoked = True
    key.save()
    key.revoked = False
    with pytest.raises(ValidationError):
        key.full_clean()
    key.save()
    key.refresh_from_db()
    assert key.revoked


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "belongs to a tier or to an account"),
        ({"tier": True, "account": True}, "belongs to a tier or to an account"),
        ({"tier": True, "window_seconds": 0}, "sliding window in seconds, or a calendar quota"),
        ({"tier": True, "calendar": "day"}, "sliding window in seconds, or a calendar quota"),
        ({"tier": True, "window_seconds": 0, "calendar": "day", "algorithm": "exact"}, "is a counter"),
        ({"tier": True, "until": True}, "Only an account's override can end"),
        ({"tier": True, "count": 0}, "greater than or equal to 1"),
        ({"tier": True, "category": "Read"}, "Lowercase letters"),
        ({"tier": True, "calendar": "year", "window_seconds": 0}, "not a valid choice"),
    ],
)
def test_rule_clean_refuses_what_cannot_apply(account, free_tier, fields, message):
    values = {"count": 10, "window_seconds": 60, **fields}
    values["tier"] = free_tier if fields.get("tier") else None
    values["account"] = account if fields.get("account") else None
    values["until"] = timezone.now() if fields.get("until") else None
    with pytest.raises(ValidationError, match=message):
        LimitRule(**values).full_clean()


@pytest.mark.parametrize(
    "fields",
    [
        {"tier": True, "count": 10, "window_seconds": 1, "algorithm": "exact"},
        {"tier": True, "count": 10, "calendar": "month", "scope": "account", "category": "export"},
        {"account": True, "count": 10, "window_seconds": 3600, "until": True, "category": "read"},
    ],
)
def test_rule_clean_accepts_each_kind_of_rule(account, free_tier, fields):
    values = {**fields, "tier": free_tier if fields.get("tier") else None}
    values["account"] = account if fields.get("account") else None
    values["until"] = timezone.now() if fields.get("until") else None
    LimitRule(**values).full_clean()


@pytest.mark.parametrize(
    "fields",
    [
        {"window_seconds": 60},  # No owner.
        {"tier": True, "account": True, "window_seconds": 60},  # Two owners.
        {"tier": True, "window_seconds": 0},  # No period.
        {"tier": True, "window_seconds": 60, "calendar": "day"},  # Two periods.
        {"tier": True, "window_seconds": 0, "calendar": "year"},  # No such calendar.
    ],
)
def test_rule_constraints_hold_in_the_database(account, free_tier, fields):
    # Of a category no other rule has: only the constraint under test can refuse it.
    values = {**fields, "category": "x", "count": 1, "tier": free_tier if fields.get("tier") else None}
    values["account"] = account if fields.get("account") else None
    with pytest.raises(IntegrityError), transaction.atomic():
        LimitRule.objects.create(**values)


@pytest.mark.parametrize("owner", ["tier", "account"])
def test_one_rule_per_owner_category_period_and_scope(account, free_tier, owner):
    other_owner = {"tier": free_tier} if owner == "account" else {"account": account}
    rule = {owner: free_tier if owner == "tier" else account, "category": "read", "window_seconds": 60}
    LimitRule.objects.create(count=1, **rule)
    # The same identity for the other kind of owner, another scope or period: other rules.
    LimitRule.objects.create(count=1, **{**rule, **{owner: None}, **other_owner})
    LimitRule.objects.create(count=1, scope="account", **rule)
    LimitRule.objects.create(count=1, **{**rule, "window_seconds": 1})
    with pytest.raises(IntegrityError), transaction.atomic():
        LimitRule.objects.create(count=2, **rule)


def test_create_api_key_command_creates_account_and_prints_key_last(db):
    out, err = StringIO(), StringIO()
    call_command("create_api_key", "newco", "--tier", "pro", "--name", "ci", stdout=out, stderr=err)
    raw_key = out.getvalue().strip().splitlines()[-1]
    key = APIKey.objects.get(prefix=raw_key.split(".")[0])
    assert key.account.name == "newco"
    assert key.account.tier.name == "Pro"
    assert key.name == "ci"
    assert raw_key not in err.getvalue()
    # A second key for an existing account needs no --tier.
    call_command("create_api_key", "newco", stdout=out, stderr=err)
    assert APIKey.objects.filter(account__name="newco").count() == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ghost"], "pass --tier"),
        (["ghost", "--tier", "Platinum"], "Unknown tier"),
    ],
)
def test_create_api_key_command_errors(db, args, message):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match=message):
        call_command("create_api_key", *args, stdout=StringIO(), stderr=StringIO())


def test_create_api_key_refuses_to_move_tiers(account):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="change tiers in the admin"):
        call_command("create_api_key", account.name, "--tier", "Pro", stdout=StringIO(), stderr=StringIO())


def test_queryset_revoke_evicts_where_update_does_not(account, raw_key, api):
    assert api.get("/api/items/").status_code == 200  # The policy is cached as active.
    APIKey.objects.filter(pk=APIKey.objects.get().pk).update(revoked=True)
    assert api.get("/api/items/").status_code == 200  # update() sends no signals: stale.
    APIKey.objects.filter(revoked=True).update(revoked=False)

    assert APIKey.objects.filter(account=account).revoke() == 1
    assert api.get("/api/items/").json()["code"] == "revoked"
    assert APIKey.objects.filter(account=account).revoke() == 0  # Already revoked.


def test_queryset_delete_evicts(account, raw_key, api):
    assert api.get("/api/items/").status_code == 200
    APIKey.objects.filter(account=account).delete()  # Signals per object: evicted.
    assert api.get("/api/items/").json()["code"] == "unknown_key"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("rotated", "already been rotated"),
        ("revoked", "revoked key cannot be rotated"),
        ("expiry", "changed while it was being rotated"),
    ],
)
def test_a_rotation_that_loses_a_race_is_refused_and_rolled_back(account, raw_key, change, message):
    old = APIKey.objects.get()
    other = APIKey.objects.create_key(account=account, name="other")[0]
    changes = {
        "rotated": {"rotated_to": other},
        "revoked": {"revoked": True},
        "expiry": {"expires_at": timezone.now() + timedelta(days=9)},
    }

    def meanwhile(instance, **kwargs):
        if instance.pk is None:  # The replacement: another process changes the old key first.
            APIKey.objects.filter(pk=old.pk).update(**changes[change])

    pre_save.connect(meanwhile, sender=APIKey)
    try:
        with pytest.raises(ValidationError, match=message):
            old.rotate(timedelta(hours=1))
    finally:
        pre_save.disconnect(meanwhile, sender=APIKey)
    assert set(APIKey.objects.values_list("name", flat=True)) == {"main", "other"}
