"""The cost of the admin's usage pages with 100 accounts, 20 of them over their limit this hour.

It needs a test database and the suite's fixtures, so it lives beside them and runs under pytest, by
name (the suite collects ``test_*.py`` only)::

    python -m pytest tests/bench_admin_pages.py -p no:randomly -q -s

For each store (LocMem, which runs the counter, and a real Redis): the finished hours are rolled up
first, as cron would; then the account list with its usage columns against the same list without them
(interleaved rounds, the median of the per-round ratios), the SQL queries of each, and the time of the
"Throttled most" page. Nothing is asserted about time: it prints.
"""

from __future__ import annotations

import statistics
import time

import pytest
from django.contrib.admin.views.main import ChangeList
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ratelimit_tiers.admin.accounts import AccountAdmin
from ratelimit_tiers.models import Account, APIKey
from tests.conftest import URL, key_client, only_rule

ACCOUNTS = 100
THROTTLED = 20
ROUNDS = 15
USAGE_COLUMNS = ("requests_today", "refused_today", "last_throttled")


def plain_changelist(self, request, **kwargs):
    return ChangeList


@pytest.mark.django_db
def test_usage_pages(admin_client, free_tier, monkeypatch, backend):
    only_rule(free_tier, "5/min")
    for i in range(ACCOUNTS):
        account = Account.objects.create(name=f"customer-{i:03}", tier=free_tier)
        raw = APIKey.objects.create_key(account=account, name="k")[1]
        if i < THROTTLED:
            api = key_client(raw)
            for _ in range(7):
                api.get(URL)
    started = time.perf_counter()
    call_command("ratelimit_tiers_rollup", verbosity=0)
    rollup = time.perf_counter() - started
    plain = [name for name in AccountAdmin.list_display if name not in USAGE_COLUMNS]

    def account_list(with_usage):
        if not with_usage:
            monkeypatch.setattr(AccountAdmin, "list_display", plain)
            monkeypatch.setattr(AccountAdmin, "get_changelist", plain_changelist)
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            assert admin_client.get("/admin/ratelimit_tiers/account/").status_code == 200
            elapsed = time.perf_counter() - started
        monkeypatch.undo()
        return elapsed, len(queries.captured_queries)

    ratios, queries = [], set()
    for _ in range(ROUNDS):
        (with_usage, n_with), (without, n_without) = account_list(True), account_list(False)
        ratios.append(with_usage / without)
        queries.add((n_with, n_without))
    pages = []
    for _ in range(5):
        started = time.perf_counter()
        assert admin_client.get("/admin/ratelimit_tiers/account/throttled/").status_code == 200
        pages.append(time.perf_counter() - started)
    print(
        f"\n[{backend}] rollup {rollup:.1f} s; account list ({ACCOUNTS} rows) with the usage columns / "
        f"without: {statistics.median(ratios):.2f}x (median of {ROUNDS} interleaved rounds), SQL queries "
        f"(with, without) {sorted(queries)}; Throttled most: {statistics.median(pages) * 1000:.0f} ms "
        "(median of 5)"
    )
