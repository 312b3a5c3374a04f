"""Usage in the admin, in a real headless Chromium against a live server on a real Redis, and against
gunicorn after issue 14's load (8 client processes, 2,000 requests).

Keys are sent over their limit through the server; the account's page then
charts what the clients saw (2xx admitted, 429 refused), the "Throttled most"
page lists the account, and the browser asked no host but the server for
anything (the admin works offline). Screenshots land in ``artifacts/screenshots/``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest

from ratelimit_tiers import tally_flush
from ratelimit_tiers.models import Account, APIKey, DailyUsage, Tier
from tests import test_ledger_processes as ledger_load
from tests.conftest import RedisServer, set_rule
from tests.processes import ProjectServer
from tests.test_admin_usage import clear_of_hour_edge
from tests.test_browser import SCREENSHOTS, api_get, log_in, page  # noqa: F401  (page: the Chromium fixture)

pytestmark = pytest.mark.redis

#: Requests sent per key of the throttled account, whose tier admits 5 per minute per key.
SENT = 12


def chart_totals(tab, ident):
    """Each series' total of the bars drawn in the SVG ``ident``, as the browser has it."""
    totals = Counter()
    for rect in tab.locator(f"svg#{ident} rect.rlt-bar").all():
        totals[rect.get_attribute("data-series")] += int(rect.get_attribute("data-value"))
    return dict(totals)


def rolled_day(key, days_ago, admitted, refused):
    """A day before today, as ``ratelimit_tiers_rollup`` writes it."""
    DailyUsage.objects.create(
        day=datetime.now(timezone.utc).date() - timedelta(days=days_ago),
        account=key.account,
        account_name=key.account.name,
        key=key,
        key_prefix=key.prefix,
        category="read",
        admitted=admitted,
        refused=refused,
    )


def rolled_history(account, key):
    """59 rolled-up days, busier on weekdays, with refusals until 10 days ago: the daily chart's past."""
    for days_ago in range(1, 60):
        weekday = days_ago % 7 < 5
        refused = (40 - days_ago // 2) if weekday and days_ago > 9 else 0
        rolled_day(key, days_ago, admitted=200 + 150 * weekday + 3 * days_ago, refused=refused)


def table(tab, number):
    """The cells of the "Throttled most" page's table ``number``."""
    rows = tab.locator(f"#rlt-throttled-{number} tbody tr")
    return [row.locator("td").all_inner_texts() for row in rows.all()]


def test_charts_and_throttled_most_after_load_with_no_request_but_to_the_server(
    page,  # noqa: F811  (the fixture imported above)
    live_server,
    redis_cache,
    django_user_model,
):
    url = live_server.url
    startup = Tier.objects.create(name="Startup")
    set_rule(startup, "5/min")
    hobby = Tier.objects.create(name="Hobby")
    set_rule(hobby, "3/min")
    set_rule(hobby, "20/h")
    globex = Account.objects.create(name="Globex", tier=startup)
    initech = Account.objects.create(name="Initech", tier=startup)
    umbrella = Account.objects.create(name="Umbrella", tier=hobby)
    keys = [APIKey.objects.create_key(account=globex, name=name) for name in ("web", "mobile")]
    calm_raw = APIKey.objects.create_key(account=initech, name="web")[1]
    small_key, small_raw = APIKey.objects.create_key(account=umbrella, name="cli")
    rolled_history(globex, keys[0][0])
    rolled_day(small_key, days_ago=4, admitted=400, refused=30)

    # Load through the server: Globex's and Umbrella's keys go over their limits, Initech stays under.
    clear_of_hour_edge()
    statuses = Counter(api_get(live_server, raw).status_code for _, raw in keys for _ in range(SENT))
    assert statuses == {200: 10, 429: 2 * SENT - 10}
    assert Counter(api_get(live_server, small_raw).status_code for _ in range(8)) == {200: 3, 429: 5}
    assert {api_get(live_server, calm_raw).status_code for _ in range(3)} == {200}
    # The refusals each process served from memory reach the ledger in batches: send them now.
    tally_flush.flush()

    requested = []
    page.context.on("request", lambda request: requested.append(request.url))
    django_user_model.objects.create_superuser("ops", "ops@example.com", "correct horse battery")
    log_in(page, url, "ops", "correct horse battery")

    # The account's page: the hourly chart holds exactly what the clients saw.
    page.goto(f"{url}/admin/ratelimit_tiers/account/{globex.pk}/change/")
    hourly = f"rlt-hourly-{globex.pk}"
    assert page.locator(f"svg#{hourly}").is_visible()
    assert chart_totals(page, hourly) == {"admitted": statuses[200], "refused (429)": statuses[429]}
    assert "Admitted and refused requests per UTC hour" in page.locator(f"svg#{hourly} desc").text_content()
    daily = chart_totals(page, f"rlt-daily-{globex.pk}")
    history = DailyUsage.objects.filter(account=globex)
    recent = history.filter(day__gte=datetime.now(timezone.utc).date() - timedelta(days=6))
    assert daily["admitted"] == statuses[200] + sum(row.admitted for row in history)
    assert daily["refused (429)"] == statuses[429] + sum(row.refused for row in history)
    page.locator(".rlt-charts").scroll_into_view_if_needed()
    page.locator(".field-usage_charts").screenshot(path=str(SCREENSHOTS / "admin-usage-charts.png"))
    page.screenshot(path=str(SCREENSHOTS / "admin-account-with-usage.png"), full_page=True)

    # The account list: today's requests and 429s, and the filter.
    page.goto(f"{url}/admin/ratelimit_tiers/account/?throttled=today")
    rows = page.locator("#result_list tbody tr")
    cells = {
        row.locator("th.field-name").inner_text(): (
            row.locator("td.field-requests_today").inner_text(),
            row.locator("td.field-refused_today").inner_text(),
        )
        for row in rows.all()
    }
    assert cells == {"Globex": (str(2 * SENT), str(statuses[429])), "Umbrella": ("8", "5")}

    # Throttled most: reached from the account list; Initech, never refused, is not there.
    page.goto(f"{url}/admin/ratelimit_tiers/account/")
    with page.expect_navigation():
        page.click("a.rlt-throttled-link")
    assert table(page, 1) == [
        # Globex's busiest key admitted 5 in this hour, of the 5/min rule's 300 an hour: 2%.
        ["Globex", "Startup", str(statuses[429]), "10", "2%"],
        # Umbrella's key admitted 3 in this hour, of the 20/h rule's 20: 15%.
        ["Umbrella", "Hobby", "5", "3", "15%"],
    ]
    assert table(page, 2) == [
        ["Umbrella", "Hobby", "35", "403", "15%"],
        ["Globex", "Startup", str(statuses[429]), str(10 + sum(r.admitted for r in recent)), "2%"],
    ]
    assert "Initech" not in page.locator("#content-main").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "admin-throttled-most.png"), full_page=True)

    # The billing CSV, downloaded through the export form (reached from Throttled most): per account,
    # what the clients saw today plus the rolled-up days.
    with page.expect_navigation():
        page.click("a.rlt-export-link")
    today = datetime.now(timezone.utc).date()
    page.fill("#id_start", (today - timedelta(days=89)).isoformat())
    page.fill("#id_end", today.isoformat())
    with page.expect_download() as download:
        page.click("#rlt-export-form input[type=submit]")
    lines = download.value.path().read_text().splitlines()
    assert lines[0] == "date,account,key_prefix,category,admitted,refused"
    billed = Counter()
    for row in csv.DictReader(lines):
        billed[row["account"], "admitted"] += int(row["admitted"])
        billed[row["account"], "refused"] += int(row["refused"])
    assert billed == {
        ("Globex", "admitted"): statuses[200] + sum(row.admitted for row in history),
        ("Globex", "refused"): statuses[429] + sum(row.refused for row in history),
        ("Initech", "admitted"): 3,
        ("Initech", "refused"): 0,
        ("Umbrella", "admitted"): 3 + 400,
        ("Umbrella", "refused"): 5 + 30,
    }

    hosts = {urlsplit(address).netloc for address in requested}
    assert requested and hosts == {urlsplit(url).netloc}, requested


SUPERUSER = """
from django.contrib.auth import get_user_model
get_user_model().objects.create_superuser("ops", "ops@example.com", "correct horse battery")
"""


def statuses_of(seen, raw_keys):
    """The clients' responses to ``raw_keys`` by status, from ``seen`` (``"<prefix> <status>"``)."""
    prefixes = {key.split(".")[0] for key in raw_keys}
    found = Counter()
    for prefix_status, n in seen.items():
        prefix, status = prefix_status.split()
        if prefix in prefixes:
            found[int(status)] += n
    return found


@pytest.fixture
def gunicorn(tmp_path):
    """The testproject under gunicorn (3 workers) on its own Redis and database, as issue 14's load test."""
    store = RedisServer(tmp_path)
    project = ProjectServer(tmp_path, ledger_load.SETTINGS % store.url, workers=3)
    yield project
    project.stop()
    store.kill()


def test_after_the_issues_load_through_gunicorn_the_admin_shows_it(page, gunicorn):  # noqa: F811
    """Issue 14's acceptance: 8 client processes send 2,000 requests at keys of two accounts through
    gunicorn, many over the limit; Chromium, against the same server, sees them charted and listed."""
    accounts = ledger_load.create(gunicorn, ["alpha", 150, 2], ["beta", 100, 2])
    gunicorn.manage("shell", "-c", SUPERUSER)
    keys = [key for _pk, raw in accounts.values() for key in raw]
    gunicorn.start()
    per_client = str(ledger_load.REQUESTS // ledger_load.CLIENTS)
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", ledger_load.CLIENT, str(gunicorn.port), json.dumps(keys), per_client],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(ledger_load.CLIENTS)
    ]
    seen: Counter[str] = Counter()
    for client in clients:
        seen.update(json.loads(client.communicate(timeout=600)[0]))
    assert sum(seen.values()) == ledger_load.REQUESTS
    assert {status.split()[1] for status in seen} == {"200", "429"}, seen
    # Each worker adds the refusals it served from memory as it exits: restart, and the ledger has them all.
    gunicorn.stop()
    gunicorn.start()

    url = f"http://127.0.0.1:{gunicorn.port}"
    requested = []
    page.context.on("request", lambda request: requested.append(request.url))
    log_in(page, url, "ops", "correct horse battery")
    expected = {name: statuses_of(seen, raw) for name, (_pk, raw) in accounts.items()}
    for name, (pk, _raw) in accounts.items():
        page.goto(f"{url}/admin/ratelimit_tiers/account/{pk}/change/")
        charted = {"admitted": expected[name][200], "refused (429)": expected[name][429]}
        assert chart_totals(page, f"rlt-hourly-{pk}") == charted, name
        assert chart_totals(page, f"rlt-daily-{pk}") == charted, name
    page.goto(f"{url}/admin/ratelimit_tiers/account/throttled/")
    assert {row[0]: int(row[2]) for row in table(page, 1)} == {name: n[429] for name, n in expected.items()}
    assert {urlsplit(address).netloc for address in requested} == {urlsplit(url).netloc}, requested
