"""Prometheus metrics from the usage ledger: admitted and refused requests by tier, category and rule.

Imported only when ``prometheus_client`` is installed: ``AppConfig.ready``
then calls :func:`register`. On a scrape, :class:`LedgerCollector` reads the
totals the ledger keeps (:func:`ratelimit_tiers.usage.daily`: the rolled-up
``DailyUsage`` rows plus the store's hours not rolled up yet), never a
per-request hook, and keeps them for :data:`CACHE_SECONDS`. The counters only
grow as long as ``ratelimit_tiers_rollup`` runs before the store drops an
hour (``RATELIMIT_TIERS_LEDGER_DAYS``) and accounts keep their tier (counts
are labelled with each account's current tier; a deleted account's with
``""``).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta, timezone
from typing import NamedTuple

from django.db.models import Min
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from ratelimit_tiers import usage
from ratelimit_tiers.conf import conf
from ratelimit_tiers.exceptions import StorageUnavailable
from ratelimit_tiers.models import Account, DailyUsage

#: Seconds a scrape's totals are reused: each read adds up the ledger's whole history.
CACHE_SECONDS = 10.0
ADMITTED = "ratelimit_tiers_requests_admitted"
REFUSED = "ratelimit_tiers_requests_refused"
UP = "ratelimit_tiers_ledger_up"


class Totals(NamedTuple):
    """Requests the ledger counted: admitted per (tier, category), refused per (tier, category, rule)."""

    admitted: dict[tuple[str, str], int]
    refused: dict[tuple[str, str, str], int]


def totals(today: date | None = None) -> Totals:
    """Everything the ledger counted so far. Raises ``StorageUnavailable`` when the store is down."""
    today = today or datetime.now(timezone.utc).date()
    first = DailyUsage.objects.aggregate(first=Min("day"))["first"] or today
    since = min(first, today - timedelta(days=conf.LEDGER_DAYS))
    # Until tomorrow: the store's clock may be a little ahead of this server's.
    rows = usage.daily(since, today + timedelta(days=1))
    # Read after the rows: an account they name was created before (unless deleted since).
    tiers: dict[int | None, str] = dict(Account.objects.values_list("pk", "tier__name"))
    admitted: dict[tuple[str, str], int] = {}
    refused: dict[tuple[str, str, str], int] = {}
    for row in rows:
        tier = tiers.get(row.account_id, "")
        admitted[tier, row.category] = admitted.get((tier, row.category), 0) + row.admitted
        by_rule = dict(row.refused_by)
        unnamed = row.refused - sum(by_rule.values())
        if unnamed > 0:  # Refusals the ledger holds no rule for.
            by_rule[""] = unnamed
        for rule, count in by_rule.items():
            refused[tier, row.category, rule] = refused.get((tier, row.category, rule), 0) + count
    return Totals(admitted, refused)


def families(found: Totals | None) -> list[Metric]:
    """The metric families of ``found`` totals; with ``None`` (the store is down), no counter samples."""
    admitted = CounterMetricFamily(
        ADMITTED, "Requests admitted, from the usage ledger.", labels=["tier", "category"]
    )
    refused = CounterMetricFamily(
        REFUSED,
        "Requests refused (429), from the usage ledger, by refusing rule.",
        labels=["tier", "category", "rule"],
    )
    up = GaugeMetricFamily(UP, "1 if the last read of the usage ledger succeeded, 0 if its store was down.")
    if found is not None:
        for (tier, category), count in sorted(found.admitted.items()):
            admitted.add_metric([tier, category], count)
        for (tier, category, rule), count in sorted(found.refused.items()):
            refused.add_metric([tier, category, rule], count)
        up.add_metric([], 1)
    else:
        up.add_metric([], 0)
    return [admitted, refused, up]


class LedgerCollector(Collector):
    """A ``prometheus_client`` collector of the ledger's totals, read at most once per ``cache_seconds``.

    A store outage yields the families without counter samples (and
    ``ratelimit_tiers_ledger_up 0``), never a failed scrape.
    """

    def __init__(
        self, cache_seconds: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cache_seconds, self.clock = cache_seconds, clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._found: Totals | None = None

    def collect(self) -> Iterable[Metric]:
        with self._lock:  # Concurrent scrapes wait for one read.
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.cache_seconds:
                try:
                    self._found = totals()
                except StorageUnavailable:
                    self._found = None
                self._read_at = now
            found = self._found
        return families(found)

    def describe(self) -> Iterable[Metric]:
        # Without it, registering would collect (a read of the database at start-up).
        return families(None)


#: The collector :func:`register` adds.
COLLECTOR = LedgerCollector()
_registered: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()


def register(registry: CollectorRegistry = REGISTRY) -> None:
    """Add :data:`COLLECTOR` to ``registry`` (``prometheus_client``'s default one), once."""
    if registry not in _registered:
        registry.register(COLLECTOR)
        _registered.add(registry)
