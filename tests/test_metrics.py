"""The Prometheus exporter: the usage ledger's totals by tier, category and rule, on a real Redis."""

from __future__ import annotations

import os
import time
from datetime import date

import pytest
from django.urls import reverse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ratelimit_tiers import metrics, rollup, tally_flush, usage
from ratelimit_tiers.ledger import HOUR
from ratelimit_tiers.models import Account, APIKey, DailyUsage, Tier
from tests.conftest import URL, key_client, only_rule
from tests.processes import run_python

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

ADMITTED, REFUSED = f"{metrics.ADMITTED}_total", f"{metrics.REFUSED}_total"


def samples(text):
    """{(name, sorted labels): value} of this app's samples in Prometheus' text format."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("ratelimit_tiers_")
    }


def scrape(client):
    response = client.get(reverse("metrics"))
    assert response.status_code == 200
    return samples(response.content.decode())


def ledger_totals(accounts):
    """The ledger's own totals of ``accounts`` today: admitted, refused by rule."""
    today = usage.hour_start(int(time.time() // HOUR)).date()
    rows = [row for row in usage.daily(today, today) if row.account_id in accounts]
    by_rule: dict[str, int] = {}
    for row in rows:
        for rule, count in row.refused_by.items():
            by_rule[rule] = by_rule.get(rule, 0) + count
    return sum(row.admitted for row in rows), by_rule


@pytest.fixture
def uncached(monkeypatch):
    """Every scrape of the registered collector reads the ledger again."""
    monkeypatch.setattr(metrics.COLLECTOR, "cache_seconds", 0)


def test_the_counts_after_real_requests_are_the_ledgers(redis_cache, free_tier, client, uncached):
    only_rule(free_tier, 3)
    pro = Tier.objects.get(name="Pro")
    only_rule(pro, "2/min", category="read")
    accounts = [Account.objects.create(name=name, tier=tier) for name, tier in (("a", free_tier), ("b", pro))]
    statuses = {200: 0, 429: 0}
    for account in accounts:
        api = key_client(APIKey.objects.create_key(account=account, name="k")[1])
        for _ in range(5):
            statuses[api.get(URL).status_code] += 1
    assert statuses == {200: 5, 429: 5}
    tally_flush.flush()  # Refusals this process served from memory, into the ledger.
    found = scrape(client)
    assert found[(ADMITTED, (("category", "read"), ("tier", "Free")))] == 3
    assert found[(ADMITTED, (("category", "read"), ("tier", "Pro")))] == 2
    assert found[(REFUSED, (("category", "read"), ("rule", "all-60s"), ("tier", "Free")))] == 2
    assert found[(REFUSED, (("category", "read"), ("rule", "read-60s"), ("tier", "Pro")))] == 3
    assert found[(metrics.UP, ())] == 1
    admitted, by_rule = ledger_totals({account.pk for account in accounts})
    assert admitted == sum(v for (name, _), v in found.items() if name == ADMITTED) == statuses[200]
    assert by_rule == {"all-60s": 2, "read-60s": 3}
    assert sum(v for (name, _), v in found.items() if name == REFUSED) == statuses[429]
    # Rolled up into DailyUsage, the same totals: the counters do not move back.
    this_hour = int(time.time() // HOUR)
    assert this_hour in rollup.roll_up(now=(this_hour + 1) * HOUR + rollup.GRACE_SECONDS + 1).rolled
    assert DailyUsage.objects.exists()
    assert scrape(client) == found


def test_a_scrape_reuses_the_totals_for_a_few_seconds(redis_cache, free_tier, raw_key):
    clock = [100.0]
    collector = metrics.LedgerCollector(cache_seconds=10, clock=lambda: clock[0])
    registry = CollectorRegistry()
    registry.register(collector)
    api = key_client(raw_key)
    label = (("category", "read"), ("tier", "Free"))

    def admitted():
        return samples(generate_latest(registry).decode()).get((ADMITTED, label))

    assert api.get(URL).status_code == 200
    assert admitted() == 1
    assert api.get(URL).status_code == 200
    clock[0] += 9.9
    assert admitted() == 1  # Read at 100.
    clock[0] += 0.1
    assert admitted() == 2


def test_a_store_outage_gives_no_counter_sample_and_no_error(redis_cache, broken_store, account):
    DailyUsage.objects.create(
        day=date(2026, 1, 5),
        account=account,
        account_name="acme",
        key_prefix="aaaa",
        category="read",
        admitted=4,
    )
    registry = CollectorRegistry()
    registry.register(metrics.LedgerCollector(cache_seconds=0))
    found = samples(generate_latest(registry).decode())
    assert found == {(metrics.UP, ()): 0}


def test_registered_once_and_without_reading_anything(django_assert_num_queries):
    registry = CollectorRegistry()
    with django_assert_num_queries(0):
        metrics.register(registry)
        metrics.register(registry)
    assert registry.get_sample_value(metrics.UP) is not None  # The app's collector, read when scraped.


IMPORTED = """
import sys
if sys.argv[1] == "absent":
    sys.modules["prometheus_client"] = None  # As if it were not installed.
import django
from django.urls import NoReverseMatch, reverse
django.setup()
try:
    reverse("metrics")
except NoReverseMatch:
    served = False
else:
    served = True
print("ratelimit_tiers.metrics" in sys.modules, served)
"""


@pytest.mark.parametrize(("installed", "expected"), [("absent", "False False"), ("present", "True True")])
def test_nothing_is_registered_without_prometheus_client(installed, expected):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "testproject.settings"}
    result = run_python(IMPORTED, installed, env=env)
    assert result.stdout.strip() == expected, result.stderr
