from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db.models.signals import pre_save
from django.utils import timezone

from ratelimit_tiers.models import APIKey, Tier


def test_seeded_tiers(db):
    assert list(Tier.objects.values_list("name", "limit", "window_seconds")) == [
        ("Free", 60, 60),
        ("Basic", 300, 60),
        ("Pro", 1000, 60),
        ("Enterprise", 5000, 60),
    ]


def test_no_missing_migrations(db):
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_category_limits_fall_back_to_tier_limit(free_tier):
    free_tier.delete_limit = 5
    assert free_tier.category_limit("delete") == 5
    assert free_tier.category_limit("read") == 60


def test_override_replaces_every_category(account):
    account.tier.write_limit = 10
    assert account.limits()["write"] == 10
    account.limit_override = 9000
    assert set(account.limits().values()) == {9000}


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


def test_window_must_be_positive(db):
    tier = Tier(name="Weird", limit=1, window_seconds=0)
    with pytest.raises(ValidationError):
        tier.full_clean()


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
