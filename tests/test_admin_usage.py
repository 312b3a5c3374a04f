"""Usage in the admin: an account's charts, the "Throttled most" page, the usage columns and filter in
the account and key lists, the CSV export, and who may see which."""

from __future__ import annotations

import csv
import io
import re
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ratelimit_tiers import tally_flush
from ratelimit_tiers.admin.account_charts import this_hour
from ratelimit_tiers.admin.throttled import periods
from ratelimit_tiers.models import Account, APIKey, DailyUsage, Tier
from ratelimit_tiers.storage.cache import CacheStorage
from tests.conftest import URL, key_client, only_rule
from tests.test_admin import staff

ACCOUNTS = "/admin/ratelimit_tiers/account/"
KEYS = "/admin/ratelimit_tiers/apikey/"
THROTTLED = "/admin/ratelimit_tiers/account/throttled/"
EXPORT = "/admin/ratelimit_tiers/dailyusage/export/"
BAR_RE = re.compile(r'<rect class="rlt-bar" data-series="([^"]+)" data-value="(\d+)"')


def clear_of_hour_edge(seconds=30):
    """Wait out the end of the UTC hour if it is less than ``seconds`` away, so that a short load and
    the pages read after it fall in one hour (and one day): the store's clock (Redis's) is not ours to set.
    """
    left = 3600 - time.time() % 3600
    if left < seconds:
        time.sleep(left + 1)


def today():
    return datetime.now(timezone.utc).date()


def rolled(key, days_ago, admitted, refused=0, category="read", last_refused=None):
    """A rolled-up day of ``key``, as ``ratelimit_tiers_rollup`` writes it."""
    return DailyUsage.objects.create(
        day=today() - timedelta(days=days_ago),
        account=key.account,
        account_name=key.account.name,
        key=key,
        key_prefix=key.prefix,
        category=category,
        admitted=admitted,
        refused=refused,
        last_refused=last_refused,
    )


@pytest.fixture
def key(account, raw_key):
    return APIKey.objects.get(prefix=raw_key.split(".")[0])


def accounts_with_keys(count, tier, first=0):
    keys = []
    for i in range(first, first + count):
        account = Account.objects.create(name=f"customer-{i}", tier=tier)
        keys.append(APIKey.objects.create_key(account=account, name="k")[0])
    return keys


def test_account_page_charts_the_daily_usage(admin_client, key):
    rolled(key, 0, 40, 10)
    rolled(key, 0, 5, category="write")
    rolled(key, 3, 7, 2)
    rolled(key, 95, 1000, 1000)  # Older than 90 days: not charted.
    page = admin_client.get(f"{ACCOUNTS}{key.account_id}/change/").content.decode()
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="rlt-chart"') == 2
    daily = page[page.index(f'id="rlt-daily-{key.account_id}"') :]
    assert BAR_RE.findall(daily) == [
        ("admitted", "7"),
        ("refused (429)", "2"),
        ("admitted", "45"),
        ("refused (429)", "10"),
    ]
    assert "Totals: admitted 52, refused (429) 12." in daily
    assert "Requests per day, last 90 days (UTC)" in page
    assert "Requests per hour, last 48 hours (UTC)" in page


def test_account_add_page_has_no_chart_yet(admin_client, db):
    page = admin_client.get(f"{ACCOUNTS}add/").content.decode()
    assert "Shown once the account is saved." in page
    assert 'class="rlt-chart"' not in page


def test_list_columns_and_the_throttled_filter(admin_client, key, free_tier):
    quiet, long_ago, this_week = accounts_with_keys(3, free_tier)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rolled(key, 0, 40, 10, last_refused=now)
    rolled(key, 0, 5, category="write")
    rolled(quiet, 0, 3)
    rolled(long_ago, 30, 1, 4, last_refused=now - timedelta(days=30))
    rolled(this_week, 3, 1, 4, last_refused=now - timedelta(days=3))
    listing = admin_client.get(ACCOUNTS)
    rows = {a.name: a._rlt_today for a in listing.context["cl"].result_list}
    assert (rows["acme"].requests, rows["acme"].refused, rows["acme"].last_throttled) == (55, 10, now)
    assert (rows["customer-0"].requests, rows["customer-0"].refused, rows["customer-0"].last_throttled) == (
        3,
        0,
        None,
    )
    assert rows["customer-1"].requests == 0
    assert rows["customer-1"].last_throttled == now - timedelta(days=30)
    page = listing.content.decode()
    assert '<td class="field-requests_today">55</td><td class="field-refused_today">10</td>' in page

    def names(query, url=ACCOUNTS):
        return sorted(str(o) for o in admin_client.get(f"{url}?throttled={query}").context["cl"].result_list)

    assert names("today") == ["acme"]
    assert names("7d") == ["acme", "customer-2"]
    assert names("never") == ["customer-0"]
    assert names("today", KEYS) == [str(key)]
    assert names("7d", KEYS) == sorted([str(key), str(this_week)])
    assert names("never", KEYS) == [str(quiet)]
    keys = admin_client.get(KEYS).context["cl"].result_list
    assert {k.prefix: k._rlt_today.refused for k in keys} == {
        key.prefix: 10,
        quiet.prefix: 0,
        this_week.prefix: 0,
        long_ago.prefix: 0,
    }


@pytest.mark.parametrize("url", [ACCOUNTS, KEYS])
def test_usage_columns_cost_the_same_queries_for_one_row_or_many(admin_client, free_tier, url):
    def queries():
        with CaptureQueriesContext(connection) as context:
            assert admin_client.get(url).status_code == 200
        return len(context.captured_queries)

    for key in accounts_with_keys(1, free_tier):
        rolled(key, 0, 5, 1)
    one = queries()
    for key in accounts_with_keys(5, free_tier, first=1):
        rolled(key, 0, 5, 1, category="write")
    assert queries() == one


def test_throttled_most_lists_accounts_by_refusals_over_7_days(admin_client, key, free_tier):
    other, calm = accounts_with_keys(2, free_tier)
    rolled(key, 2, 100, 5)
    rolled(other, 6, 50, 30)
    rolled(other, 7, 50, 1000)  # Eight days ago: not in the last 7 days.
    rolled(calm, 1, 500)
    response = admin_client.get(THROTTLED)
    [day, week] = response.context["periods"]
    assert [(t.account.name, t.refused, t.admitted) for t in week.rows] == [
        ("customer-0", 30, 50),
        ("acme", 5, 100),
    ]
    assert day.rows == []
    page = response.content.decode()
    assert "Peak share</em> is the highest share of a" in page.replace("<em>P", "<em>P")
    assert '<td class="rlt-refused">30</td>' in page
    assert "No account was refused a request." in page


def test_the_lists_link_to_throttled_most(admin_client, db):
    assert f'href="{THROTTLED}"' in admin_client.get(ACCOUNTS).content.decode()
    assert f'href="{THROTTLED}"' in admin_client.get("/admin/ratelimit_tiers/dailyusage/").content.decode()
    # The admin index lists the daily usage, whose page links to Throttled most and the export.
    assert 'href="/admin/ratelimit_tiers/dailyusage/"' in admin_client.get("/admin/").content.decode()


@pytest.mark.parametrize(
    ("codenames", "links"),
    [
        (["view_account"], ["rlt-throttled-link"]),
        (["view_dailyusage"], ["rlt-export-link"]),
        (["view_account", "change_dailyusage"], ["rlt-throttled-link", "rlt-export-link"]),
        (["view_apikey"], []),
    ],
)
def test_the_app_index_links_to_the_usage_pages_each_may_see(client, django_user_model, db, codenames, links):
    client.force_login(staff(django_user_model, "someone", *codenames))
    page = client.get("/admin/ratelimit_tiers/").content.decode()
    assert [link for link in ("rlt-throttled-link", "rlt-export-link") if link in page] == links
    assert ("rlt-usage-pages" in page) == bool(links)


def test_export_streams_the_csv_of_a_date_range(admin_client, key):
    rolled(key, 1, 40, 10)
    rolled(key, 1, 5, category="write")
    rolled(key, 40, 7, 2)
    start, end = today() - timedelta(days=30), today()
    response = admin_client.get(EXPORT, {"start": start, "end": end})
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="usage-{start}-{end}.csv"'
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    day = str(today() - timedelta(days=1))
    assert rows[0] == ["date", "account", "key_prefix", "category", "admitted", "refused"]
    assert sorted(rows[1:]) == [
        [day, "acme", key.prefix, "read", "40", "10"],
        [day, "acme", key.prefix, "write", "5", "0"],
    ]


@pytest.mark.parametrize(
    ("start", "end", "error"),
    [
        (0, 1, "The first day comes after the last."),
        (0, -1, "The last day is in the future (UTC)."),
        (400, 0, "At most 366 days per export."),
        ("x", 0, "Enter a valid date."),
    ],
)
def test_export_form_refuses_bad_ranges(admin_client, db, start, end, error):
    def day(ago):
        return ago if isinstance(ago, str) else today() - timedelta(days=ago)

    response = admin_client.get(EXPORT, {"start": day(start), "end": day(end)})
    assert not response.streaming
    assert error in response.content.decode()


def test_export_form_without_dates(admin_client, db):
    page = admin_client.get(EXPORT).content.decode()
    assert 'type="date"' in page
    assert "date,account,key_prefix,category,admitted,refused" in page


def test_view_only_staff_see_charts_and_lists_but_do_not_export(client, django_user_model, key):
    rolled(key, 0, 40, 10)
    client.force_login(staff(django_user_model, "viewer", "view_account", "view_apikey", "view_tier"))
    page = client.get(f"{ACCOUNTS}{key.account_id}/change/").content.decode()
    assert page.count('class="rlt-chart"') == 2
    assert client.get(THROTTLED).context["periods"][1].rows[0].account == key.account
    assert "rlt-export-link" not in client.get(THROTTLED).content.decode()
    assert client.get(ACCOUNTS).context["cl"].result_list[0]._rlt_today.refused == 10
    assert client.get(EXPORT, {"start": today(), "end": today()}).status_code == 403
    assert client.get(EXPORT).status_code == 403


def test_export_needs_the_view_permission_on_daily_usage(client, django_user_model, key):
    rolled(key, 0, 40, 10)
    client.force_login(staff(django_user_model, "billing", "view_dailyusage"))
    response = client.get(EXPORT, {"start": today(), "end": today()})
    assert response.status_code == 200
    assert f"acme,{key.prefix},read,40,10" in b"".join(response.streaming_content).decode()
    assert client.get(THROTTLED).status_code == 403  # Accounts are not theirs to see.


@pytest.mark.parametrize("url", [THROTTLED, EXPORT, f"{EXPORT}?start=2026-01-01&end=2026-01-02"])
def test_anonymous_users_are_sent_to_log_in(client, db, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


def test_staff_without_permissions_are_refused(client, django_user_model, db):
    client.force_login(staff(django_user_model, "nobody"))
    assert client.get(THROTTLED).status_code == 403
    assert client.get(EXPORT).status_code == 403


def test_daily_usage_is_read_only_in_the_admin(admin_client, key):
    row = rolled(key, 0, 40, 10)
    listing = admin_client.get("/admin/ratelimit_tiers/dailyusage/").content.decode()
    assert key.prefix in listing
    assert "/admin/ratelimit_tiers/dailyusage/add/" not in listing
    page = admin_client.get(f"/admin/ratelimit_tiers/dailyusage/{row.pk}/change/").content.decode()
    assert 'name="_save"' not in page
    assert (
        admin_client.post(f"/admin/ratelimit_tiers/dailyusage/{row.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert DailyUsage.objects.filter(pk=row.pk).exists()
    assert Tier.objects.exists()


def test_with_the_store_down_every_usage_page_says_so_and_none_fails(admin_client, key, broken_store):
    rolled(key, 2, 40, 10)
    page = admin_client.get(f"{ACCOUNTS}{key.account_id}/change/").content.decode()
    assert page.count("Usage unavailable: the rate-limit store does not answer.") == 2
    assert 'class="rlt-chart"' not in page

    throttled = admin_client.get(THROTTLED)
    assert throttled.status_code == 200
    assert throttled.context["periods"] is None
    assert "Usage unavailable" in throttled.content.decode()

    for url in (ACCOUNTS, KEYS):
        listing = admin_client.get(url).content.decode()
        assert listing.count('<em class="rlt-usage-unavailable">usage unavailable</em>') == 3

    # The filter falls back to the rolled-up days, and says so.
    filtered = admin_client.get(f"{ACCOUNTS}?throttled=7d")
    assert [a.name for a in filtered.context["cl"].result_list] == ["acme"]
    assert "filtered on the rolled-up days only" in filtered.content.decode()

    # The export refuses rather than send a CSV without the hours not rolled up yet.
    export = admin_client.get(EXPORT, {"start": today() - timedelta(days=3), "end": today()})
    assert not export.streaming
    assert (
        "Usage unavailable: the rate-limit store does not answer; try again later." in export.content.decode()
    )


def test_hourly_chart_and_the_last_24_hours_count_what_clients_saw(admin_client, key, raw_key, backend):
    only_rule(key.account.tier, "5/min")
    clear_of_hour_edge()
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)
    rolled(key, 1, 1, 1, last_refused=yesterday)
    api = key_client(raw_key)
    statuses = Counter(api.get(URL).status_code for _ in range(9))
    assert statuses == {200: 5, 429: 4}
    tally_flush.flush()  # The refusals served from the process's memory, into the ledger now.
    page = admin_client.get(f"{ACCOUNTS}{key.account_id}/change/").content.decode()
    hourly = page[
        page.index(f'id="rlt-hourly-{key.account_id}"') : page.index(f'id="rlt-daily-{key.account_id}"')
    ]
    assert BAR_RE.findall(hourly) == [("admitted", "5"), ("refused (429)", "4")]
    [day, week] = admin_client.get(THROTTLED).context["periods"]
    # 5 admitted in the hour by the key, of the 5/min rule's 300 an hour.
    assert [(t.account, t.refused, t.admitted, t.peak_percent) for t in day.rows] == [
        (key.account, 4, 5, "2%")
    ]
    assert [(t.account, t.refused, t.admitted) for t in week.rows] == [(key.account, 5, 6)]  # And yesterday.
    listing = admin_client.get(ACCOUNTS).context["cl"].result_list
    assert (listing[0]._rlt_today.requests, listing[0]._rlt_today.refused) == (9, 4)
    assert listing[0]._rlt_today.last_throttled > yesterday + timedelta(hours=12)  # Today's, from the store.


def test_the_last_24_hours_reach_back_into_yesterday(key, raw_key, monkeypatch):
    """A refusal 23 hours ago, on the previous UTC day, is in the last 24 hours."""
    only_rule(key.account.tier, "5/min")
    now = datetime.now(timezone.utc)
    if now.hour == 23:  # The period's first hour would be today's: look from an hour earlier.
        now -= timedelta(hours=1)
    then = this_hour(now) - timedelta(hours=23, minutes=-30)
    assert then.date() < now.date()
    monkeypatch.setattr(CacheStorage, "timer", staticmethod(then.timestamp))  # The store's clock.
    api = key_client(raw_key)
    assert Counter(api.get(URL).status_code for _ in range(7)) == {200: 5, 429: 2}
    tally_flush.flush()
    [day, week] = periods(now)
    assert [(t.account, t.refused, t.admitted, t.peak_percent) for t in day.rows] == [
        (key.account, 2, 5, "2%")
    ]
    assert [(t.account, t.refused) for t in week.rows] == [(key.account, 2)]
    later = periods(now + timedelta(hours=1))  # An hour on, that hour is out of the last 24.
    assert (later[0].rows, [t.refused for t in later[1].rows]) == ([], [2])


@pytest.mark.parametrize("permission", ["view_dailyusage", "change_dailyusage"])
def test_who_may_export_is_offered_the_export(client, django_user_model, db, permission):
    client.force_login(staff(django_user_model, "billing", "view_account", permission))
    assert "rlt-export-link" in client.get(THROTTLED).content.decode()
    assert client.get(EXPORT, {"start": today(), "end": today()}).status_code == 200
