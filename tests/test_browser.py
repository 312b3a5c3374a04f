"""The admin in a real headless Chromium (Debian's, driven by Playwright), against a live server.

An operator creates a tier, an account and a key, sees the secret once, and the
key works against the API until the operator revokes it; a rotated key and its
replacement both work during the grace period. A view-only staff user is
offered none of the actions, and the server refuses them when posted anyway;
the key's History page shows who did what. Screenshots land in
``artifacts/screenshots/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from django.contrib.auth.models import Permission
from django.db import connections
from django.test import Client
from playwright.sync_api import Page, sync_playwright

from ratelimit_tiers.models import Account, APIKey, Tier
from tests.conftest import set_rule

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"  # Debian's package, installed by scripts/install-system-deps.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY_RE = re.compile(r"^\w{12}\.[\w-]+$")


@pytest.fixture
def page(live_server, monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the ORM calls the
    # test makes around it are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(10_000)
        yield context.new_page()
        context.close()
        browser.close()
        # The ORM calls made here, under Playwright's loop, opened a connection of
        # their own; close it, or PostgreSQL cannot drop the test database.
        connections.close_all()


def api_get(live_server, raw_key):
    return requests.get(
        f"{live_server.url}/api/items/", headers={"Authorization": f"Api-Key {raw_key}"}, timeout=10
    )


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def add_key(page: Page, url: str, account: str, name: str) -> str:
    page.goto(f"{url}/admin/ratelimit_tiers/apikey/add/")
    page.select_option("#id_account", label=account)
    page.fill("#id_name", name)
    with page.expect_navigation():
        page.click("input[name=_save]")
    return new_key_on(page)


def new_key_on(page: Page) -> str:
    """The secret on the page that answered the POST (never in a message or a cookie)."""
    assert "will not be shown again" in page.locator(".rlt-copy-now").inner_text()
    [raw_key] = page.locator("code.rlt-new-key").all_inner_texts()
    assert KEY_RE.match(raw_key), raw_key
    assert not [c for c in page.context.cookies() if raw_key.split(".")[1] in c["value"]]
    return raw_key


def log_in(page: Page, url: str, username: str, password: str) -> None:
    page.goto(f"{url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    with page.expect_navigation():
        page.click("input[type=submit]")
    assert page.locator("#user-tools").is_visible()  # Logged in: the login page has no user tools.


def run_action(page: Page, url: str, key: APIKey, action: str) -> str:
    page.goto(f"{url}/admin/ratelimit_tiers/apikey/")
    page.check(f"input[name=_selected_action][value='{key.pk}']")
    page.select_option("select[name=action]", action)
    with page.expect_navigation():  # Read the page that answers the action, not the list it left.
        page.click("button[name=index]")
    return page.locator("#main").inner_text()


def add_rule(page: Page, rate: str, category: str = "") -> None:
    """Add a row to the tier's limit rules inline and type the rule as RATE text."""
    rows = page.locator("#rules-group tr.form-row.dynamic-rules")
    count = rows.count()
    page.click("#rules-group .add-row a")
    row = rows.nth(count)
    row.locator("input[name$='-rate']").fill(rate)
    row.locator("input[name$='-category']").fill(category)


def test_operator_tour(page, live_server, django_user_model):
    url = live_server.url
    django_user_model.objects.create_superuser("ops", "ops@example.com", "correct horse battery")

    log_in(page, url, "ops", "correct horse battery")

    # A tier with its own limits, and an account in it.
    page.goto(f"{url}/admin/ratelimit_tiers/tier/add/")
    page.fill("#id_name", "Startup")
    add_rule(page, "5/min")
    add_rule(page, "2/min", category="write")
    page.click("input[name=_save]")
    assert "was added successfully" in page.locator("ul.messagelist").inner_text()
    shot(page, "tiers")

    page.goto(f"{url}/admin/ratelimit_tiers/account/add/")
    page.fill("#id_name", "Globex")
    page.select_option("#id_tier", label="Startup")
    page.click("input[name=_save]")
    assert "was added successfully" in page.locator("ul.messagelist").inner_text()

    # The secret is shown once, on the page that answers the POST...
    raw_key = add_key(page, url, "Globex", "web")
    shot(page, "key-created")
    key = APIKey.objects.get(prefix=raw_key.split(".")[0])
    with page.expect_navigation():
        page.click("a.rlt-back")
    assert raw_key.split(".")[1] not in page.content()  # ...and never again.
    page.goto(f"{url}/admin/ratelimit_tiers/apikey/{key.pk}/change/")
    assert raw_key.split(".")[1] not in page.content()

    # The key works against the live server, with the tier's limits in the headers.
    responses = [api_get(live_server, raw_key) for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 200]
    assert responses[1].headers["X-RateLimit-Limit"] == "5"
    assert responses[1].headers["X-RateLimit-Remaining"] == "3"

    # The account page shows its live usage, read from the limiter store.
    page.goto(f"{url}/admin/ratelimit_tiers/account/{key.account_id}/change/")
    assert "read · all-60s: 2 / 5 used, 3 left" in page.locator(".rlt-usage").first.inner_text()
    shot(page, "account-usage")

    # Revoked in the admin: refused on the next call.
    assert "Revoked 1 key(s)." in run_action(page, url, key, "revoke_keys")
    refused = api_get(live_server, raw_key)
    assert refused.status_code in (401, 403)
    assert refused.json()["code"] == "revoked"

    # Rotation: the old key and its replacement both work during the grace period.
    old_raw = add_key(page, url, "Globex", "mobile")
    old = APIKey.objects.get(prefix=old_raw.split(".")[0])
    run_action(page, url, old, "rotate_keys")
    new_raw = new_key_on(page)
    assert new_raw != old_raw
    assert api_get(live_server, old_raw).status_code == 200
    assert api_get(live_server, new_raw).status_code == 200
    page.goto(f"{url}/admin/ratelimit_tiers/apikey/")
    statuses = page.locator(".rlt-status").all_inner_texts()
    assert sorted(statuses) == ["active", "revoked", "rotating"]
    shot(page, "keys")


def test_view_only_staff_cannot_act_and_history_shows_who_did(page, live_server, django_user_model):
    url = live_server.url
    # live_server flushes the database between tests: no seeded tiers here.
    tier = Tier.objects.create(name="Viewers")
    set_rule(tier, "50/min")
    key, raw_key = APIKey.objects.create_key(
        account=Account.objects.create(name="Initech", tier=tier), name="api"
    )
    viewer = django_user_model.objects.create_user("viewer", password="look but do not touch", is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(codename__in=["view_apikey", "view_account", "view_tier"])
    )
    log_in(page, url, "viewer", "look but do not touch")
    page.goto(f"{url}/admin/ratelimit_tiers/apikey/")
    assert page.locator(f"text={key.prefix}").count() == 1  # The viewer sees the key...
    assert page.locator("select[name=action]").count() == 0  # ...but is offered no action.
    assert page.locator("input[name=_selected_action]").count() == 0
    shot(page, "keys-view-only")

    # Posting the action form anyway, with the viewer's session, is refused by the server.
    client = Client()
    client.force_login(viewer)
    for action in ["rotate_keys", "revoke_keys", "reset_counters"]:
        response = client.post(
            "/admin/ratelimit_tiers/apikey/", {"action": action, "_selected_action": [key.pk]}, follow=True
        )
        assert response.status_code == 200
        assert 'class="rlt-new-key"' not in response.content.decode()
    key.refresh_from_db()
    assert (key.revoked, key.rotated_to) == (False, None)
    assert api_get(live_server, raw_key).status_code == 200

    # An operator with the permissions acts; the key's History page is the audit trail.
    operator = django_user_model.objects.create_user("operator", password="allowed to act", is_staff=True)
    operator.user_permissions.set(
        Permission.objects.filter(
            codename__in=["view_apikey", "change_apikey", "rotate_apikey", "view_account", "view_tier"]
        )
    )
    page.context.clear_cookies()
    log_in(page, url, "operator", "allowed to act")
    run_action(page, url, key, "reset_counters")
    run_action(page, url, key, "rotate_keys")
    new_raw = new_key_on(page)
    assert api_get(live_server, new_raw).status_code == 200
    page.goto(f"{url}/admin/ratelimit_tiers/apikey/{key.pk}/history/")
    rows = page.locator("#change-history tbody tr").all_inner_texts()
    assert len(rows) == 2
    assert all("operator" in row for row in rows)
    assert "Rate-limit counters reset" in rows[0]
    assert f"replaced by {new_raw.split('.')[0]}" in rows[1] and "grace" in rows[1]
    shot(page, "key-history")


def test_operator_adds_a_daily_quota_to_a_tier_inline(page, live_server, django_user_model):
    url = live_server.url
    tier = Tier.objects.create(name="Hobby")
    set_rule(tier, "60/min")
    django_user_model.objects.create_superuser("ops", "ops@example.com", "correct horse battery")
    log_in(page, url, "ops", "correct horse battery")

    # A typo is refused with a message that says how to write a rate, and nothing is saved...
    page.goto(f"{url}/admin/ratelimit_tiers/tier/{tier.pk}/change/")
    add_rule(page, "1000/dya")
    with page.expect_navigation():
        page.click("input[name=_save]")
    assert "Not a rate: 1000/dya. Write COUNT/PERIOD" in page.locator("#rules-group .errorlist").inner_text()
    assert [r.as_rule().rate for r in tier.rules.all()] == ["60/min"]

    # ...then the quota, typed as the operator says it.
    page.locator("#rules-group input[value='1000/dya']").fill("1000/day")
    with page.expect_navigation():
        page.click("input[name=_save]")
    assert "was changed successfully" in page.locator("ul.messagelist").inner_text()
    row = page.locator("#result_list tr", has_text="Hobby")
    assert row.locator("td.field-limits").inner_text() == "60/min · 1000/day"
    shot(page, "tier-rules")
    assert sorted(r.as_rule().rate for r in tier.rules.all()) == ["1000/day", "60/min"]
