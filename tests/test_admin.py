from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.contrib.messages.storage.cookie import CookieStorage
from django.utils import timezone

from ratelimit_tiers.models import APIKey, Tier
from tests.conftest import URL, key_client, set_rule

NEW_KEY_RE = re.compile(r'<code class="rlt-new-key">(\w{12}\.[\w-]+)</code>')


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def act(admin_client, action, *keys, follow=True):
    return admin_client.post(
        "/admin/ratelimit_tiers/apikey/",
        {"action": action, "_selected_action": [k.pk for k in keys]},
        follow=follow,
    )


def new_keys_of(response):
    return NEW_KEY_RE.findall(response.content.decode())


def staff(django_user_model, username, *codenames):
    user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="ratelimit_tiers", codename__in=codenames)
    )
    return user


def assert_no_secret_in_cookies(response, raw_key, rf):
    """Neither a Set-Cookie header nor a decoded messages cookie holds the secret."""
    secret = raw_key.split(".")[1]
    assert secret not in str(response.cookies)
    morsel = response.cookies.get(CookieStorage.cookie_name)
    if morsel is not None and morsel.value:
        stored = CookieStorage(rf.get("/"))._decode(morsel.value) or []
        assert not [m for m in stored if secret in str(m)]


def test_tier_list_shows_limits_shadow_and_account_count(admin_client, account):
    Tier.objects.filter(name="Pro").update(shadow=True)
    set_rule(Tier.objects.get(name="Pro"), 900, category="read")
    page = admin_client.get("/admin/ratelimit_tiers/tier/").content.decode()
    for text in ["Free", "Pro", "900", "Enterprise", "Shadow mode", "Accounts"]:
        assert text in page
    assert admin_client.get("/admin/ratelimit_tiers/tier/?shadow__exact=1").context["cl"].result_count == 1


def test_account_page_shows_key_count_and_live_usage(admin_client, account, raw_key):
    api = key_client(raw_key)
    for _ in range(3):
        assert api.get(URL).status_code == 200
    listing = admin_client.get("/admin/ratelimit_tiers/account/")
    assert "acme" in listing.content.decode()
    row = listing.context["cl"].result_list[0]
    assert row._key_count == 1

    page = admin_client.get(f"/admin/ratelimit_tiers/account/{account.pk}/change/").content.decode()
    assert "read · all-60s: 3 / 60 used, 57 left, resets in" in page
    assert "write · all-60s: 0 / 60 used, 60 left" in page
    assert "rlt-status-active" in page


def test_account_search_and_filters(admin_client, account, raw_key):
    prefix = raw_key.split(".")[0]
    found = admin_client.get(f"/admin/ratelimit_tiers/account/?q={prefix}")
    assert [a.name for a in found.context["cl"].result_list] == ["acme"]
    assert admin_client.get("/admin/ratelimit_tiers/account/?q=nobody").context["cl"].result_count == 0
    inactive = admin_client.get("/admin/ratelimit_tiers/account/?is_active__exact=0")
    assert inactive.context["cl"].result_count == 0


def test_usage_reads_the_store_without_sql_once_warm(admin_client, api, account, django_assert_num_queries):
    from ratelimit_tiers.admin import live_usage
    from ratelimit_tiers.admin.usage import RULES_PREFETCH

    key = APIKey.objects.select_related("account__tier").prefetch_related(*RULES_PREFETCH).get()
    api.get(URL)
    live_usage(key)  # Warm: the policy is cached by the first request anyway.
    with django_assert_num_queries(0):
        html = live_usage(key)
    assert "read · all-60s: 1 / 60 used" in html


def test_key_list_shows_status_and_filters_by_it(admin_client, account):
    APIKey.objects.create_key(account=account, name="active")
    APIKey.objects.create_key(account=account, name="revoked", revoked=True)
    APIKey.objects.create_key(
        account=account, name="expired", expires_at=timezone.now() - timedelta(seconds=1)
    )
    rotating, _ = APIKey.objects.create_key(account=account, name="rotating")
    rotating.rotate(timedelta(hours=1))
    page = admin_client.get("/admin/ratelimit_tiers/apikey/").content.decode()
    for status in ["active", "revoked", "expired", "rotating"]:
        assert f"rlt-status-{status}" in page

    def names(status):
        response = admin_client.get(f"/admin/ratelimit_tiers/apikey/?status={status}")
        return sorted(k.name for k in response.context["cl"].result_list)

    assert names("revoked") == ["revoked"]
    assert names("expired") == ["expired"]
    assert names("rotating") == ["rotating"]
    assert names("active") == ["active", "rotating"]  # The replacement keeps the name.


def test_creating_a_key_shows_the_secret_once(admin_client, account, rf):
    response = admin_client.post(
        "/admin/ratelimit_tiers/apikey/add/",
        {"account": account.pk, "name": "ci", "expires_at": ""},
    )
    # The answer to the POST itself shows the secret: no redirect, no message, no cookie.
    assert response.status_code == 200
    [raw_key] = new_keys_of(response)
    key = APIKey.objects.get(name="ci")
    assert raw_key.startswith(key.prefix + ".")
    assert "will not be shown again" in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert_no_secret_in_cookies(response, raw_key, rf)
    assert not [m for m in messages_of(response) if raw_key.split(".")[1] in m]
    assert key_client(raw_key).get(URL).status_code == 200
    again = admin_client.get(f"/admin/ratelimit_tiers/apikey/{key.pk}/change/").content.decode()
    assert raw_key not in again
    assert raw_key.split(".")[1] not in again


def test_add_form_has_no_revoked_box(admin_client, account):
    page = admin_client.get("/admin/ratelimit_tiers/apikey/add/").content.decode()
    assert 'name="revoked"' not in page
    assert 'name="expires_at_0"' in page


def test_revoke_action(admin_client, account, raw_key):
    key = APIKey.objects.get()
    api = key_client(raw_key)
    assert api.get(URL).status_code == 200
    response = act(admin_client, "revoke_keys", key)
    assert "Revoked 1 key(s)." in messages_of(response)
    assert api.get(URL).json()["code"] == "revoked"


def test_rotate_action_keeps_both_keys_working_during_the_grace(admin_client, account, raw_key, settings, rf):
    settings.RATELIMIT_TIERS_ROTATION_GRACE = 3600
    old = APIKey.objects.get()
    response = act(admin_client, "rotate_keys", old, follow=False)
    assert response.status_code == 200
    [new_raw] = new_keys_of(response)
    assert "no-store" in response["Cache-Control"]
    assert_no_secret_in_cookies(response, new_raw, rf)
    old.refresh_from_db()
    new = old.rotated_to
    assert new is not None and new_raw.startswith(new.prefix + ".")
    assert (new.account, new.name, new.expires_at) == (old.account, old.name, None)
    assert timedelta(minutes=59) < old.expires_at - timezone.now() <= timedelta(hours=1)
    assert old.status == "rotating" and new.status == "active"
    assert key_client(raw_key).get(URL).status_code == 200
    assert key_client(new_raw).get(URL).status_code == 200

    # Rotating it again is refused; a revoked key cannot be rotated either.
    assert "already been rotated" in messages_of(act(admin_client, "rotate_keys", old))[0]
    new.revoked = True
    new.save()
    assert "revoked key cannot be rotated" in messages_of(act(admin_client, "rotate_keys", new))[0]


def test_rotated_key_stops_after_the_grace(account, raw_key):
    old = APIKey.objects.get()
    _new, new_raw = old.rotate(timedelta(0))
    assert key_client(raw_key).get(URL).json()["code"] == "expired"
    assert key_client(new_raw).get(URL).status_code == 200
    old.refresh_from_db()
    assert old.status == "expired"


def test_rotation_never_extends_an_earlier_expiry(account):
    soon = timezone.now() + timedelta(minutes=5)
    key, _ = APIKey.objects.create_key(account=account, name="short", expires_at=soon)
    new, _ = key.rotate(timedelta(days=1))
    key.refresh_from_db()
    assert key.expires_at == soon
    assert new.expires_at is None
    later = timezone.now() + timedelta(days=30)
    long_lived, _ = APIKey.objects.create_key(account=account, name="long", expires_at=later)
    assert long_lived.rotate(timedelta(days=1))[0].expires_at == later  # The replacement keeps it.


def test_reset_counters_action(admin_client, account, raw_key, free_tier):
    set_rule(free_tier, 1)
    api = key_client(raw_key)
    assert [api.get(URL).status_code for _ in range(2)] == [200, 429]
    assert "Counters reset." in messages_of(act(admin_client, "reset_counters", APIKey.objects.get()))
    assert api.get(URL).status_code == 200


@pytest.mark.parametrize("action", ["reset_counters", "usage"])
def test_store_outage_is_reported_not_raised(admin_client, account, raw_key, broken_store, action):
    key = APIKey.objects.get()
    if action == "usage":
        page = admin_client.get(f"/admin/ratelimit_tiers/apikey/{key.pk}/change/").content.decode()
        assert "rate-limit store unavailable" in page
    else:
        assert "unavailable" in messages_of(act(admin_client, "reset_counters", key))[0]


def test_revoked_key_page_is_locked_and_shows_its_state(admin_client, account):
    key, _ = APIKey.objects.create_key(account=account, name="gone", revoked=True)
    page = admin_client.get(f"/admin/ratelimit_tiers/apikey/{key.pk}/change/").content.decode()
    assert 'name="name"' not in page
    assert "rlt-status-revoked" in page


ACTIONS = ["revoke_keys", "rotate_keys", "reset_counters"]


@pytest.mark.parametrize(
    ("codenames", "offered"),
    [
        (["view_apikey"], []),
        (["view_apikey", "change_apikey"], ["revoke_keys", "reset_counters"]),
        (["view_apikey", "rotate_apikey"], []),  # Rotating also takes the change permission.
        (["view_apikey", "change_apikey", "rotate_apikey"], ACTIONS),
    ],
)
def test_actions_need_their_permissions(client, django_user_model, account, raw_key, codenames, offered, rf):
    client.force_login(staff(django_user_model, "someone", *codenames))
    page = client.get("/admin/ratelimit_tiers/apikey/")
    assert page.status_code == 200
    assert sorted(a for a in ACTIONS if f'value="{a}"' in page.content.decode()) == sorted(offered)

    # Posting an action that is not offered does nothing: no key issued, revoked or logged.
    key = APIKey.objects.get()
    for action in sorted(set(ACTIONS) - set(offered)):
        response = act(client, action, key, follow=False)
        assert new_keys_of(response) == []
        assert_no_secret_in_cookies(response, raw_key, rf)
    key.refresh_from_db()
    assert (key.revoked, key.rotated_to, APIKey.objects.count()) == (False, None, 1)
    assert LogEntry.objects.count() == 0
    if not offered:
        assert key_client(raw_key).get(URL).status_code == 200


def test_every_action_is_in_the_key_history(client, django_user_model, account, raw_key, settings):
    settings.RATELIMIT_TIERS_ROTATION_GRACE = 600
    operator = staff(django_user_model, "operator", "view_apikey", "change_apikey", "rotate_apikey")
    client.force_login(operator)
    key = APIKey.objects.get()
    act(client, "reset_counters", key)
    [new_raw] = new_keys_of(act(client, "rotate_keys", key, follow=False))
    new = APIKey.objects.get(prefix=new_raw.split(".")[0])
    act(client, "revoke_keys", new)
    key.refresh_from_db()

    old_log = list(LogEntry.objects.filter(object_id=str(key.pk)).order_by("pk"))
    assert [entry.user for entry in old_log] == [operator, operator]
    assert [entry.get_change_message() for entry in old_log] == [
        "Rate-limit counters reset (admin action).",
        f"Rotated (admin action): replaced by {new.prefix}; this key keeps working until "
        f"{key.expires_at.isoformat()} (grace 600 s).",
    ]
    new_log = LogEntry.objects.filter(object_id=str(new.pk)).order_by("pk")
    assert [(e.action_flag, e.get_change_message()) for e in new_log] == [
        (1, f"Issued by rotating {key.prefix}."),  # ADDITION
        (2, "Revoked (admin action)."),  # CHANGE
    ]
    history = client.get(f"/admin/ratelimit_tiers/apikey/{key.pk}/history/").content.decode()
    assert "operator" in history
    assert f"replaced by {new.prefix}" in history
    assert new_raw.split(".")[1] not in history


def test_tier_page_shows_where_the_exact_log_gives_way_to_the_counter(admin_client, free_tier):
    page = admin_client.get(f"/admin/ratelimit_tiers/tier/{free_tier.pk}/change/").content.decode()
    assert "exact. The exact log keeps at most 10,000" in page
    set_rule(free_tier, 20_000, category="read")
    page = admin_client.get(f"/admin/ratelimit_tiers/tier/{free_tier.pk}/change/").content.decode()
    assert "Algorithm in use" in page
    assert "exact, but counter for read-60s." in page
    assert "keeps at most 10,000 requests per window" in page
    assert admin_client.get("/admin/ratelimit_tiers/tier/add/").status_code == 200
