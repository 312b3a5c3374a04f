"""The usage ledger on any Django cache: a counter per key, category, UTC hour and field (``add``/``incr``).

The layout of ``storage/scripts/ledger.lua``, each hash field a cache key of
its own (``<ledger_key>:<hour>:<prefix>:<category>:<what>``), plus ``r``, the
refusals of every rule together. A cache cannot list its keys, so reading
asks for every combination of the accounts' key prefixes, the categories and
the rule names it is given (:class:`~ratelimit_tiers.ledger.LedgerScope`):
refusals by a rule no longer known are in ``refused`` but not in
``refused_by``, and a deleted key's counts are not found. The last refusal is
a plain ``set``: concurrent refusals may keep one a moment older. Counting
is as atomic as the cache's ``incr`` (see ``CacheStorage``).
"""

from __future__ import annotations

from collections.abc import Sequence

from django.core.cache import BaseCache

from ratelimit_tiers.conf import conf
from ratelimit_tiers.ledger import HOUR, Counts, LedgerScope, Refusals, Slot, hour_of
from ratelimit_tiers.names import (
    LEDGER_ADMITTED,
    LEDGER_LAST_REFUSED,
    LEDGER_REFUSED,
    OTHER_THROTTLE,
    account_tag,
    ledger_field,
    ledger_key,
)

#: Cache keys read per ``get_many``.
READ_BATCH = 1000


def field_key(slot: Slot, what: str) -> str:
    """The cache key of one ledger field: what the Redis layout keeps as a hash field."""
    base = f"{ledger_key(account_tag(slot.account))}:{slot.hour}"
    return f"{base}:{ledger_field(slot.prefix, slot.category)}{what}"


class CacheLedger:
    """Counting and reading the ledger in ``cache``, on the app server's clock (Unix ms)."""

    def __init__(self, cache: BaseCache) -> None:
        self.cache = cache

    def count(self, account: int, prefix: str, category: str, now: int, refused_by: str | None) -> None:
        """One request at ``now``: admitted (``refused_by`` ``None``) or refused by that rule."""
        retention = conf.LEDGER_DAYS * 86400
        if not retention:
            return
        slot = Slot(hour_of(now), account, prefix, category)
        if refused_by is None:
            self._add(slot, LEDGER_ADMITTED, 1, now, retention)
        else:
            self._refuse(slot, refused_by, 1, now, retention)

    def give_back(self, account: int, prefix: str, category: str, now: int) -> None:
        """Move the admission counted at ``now`` to the refusals (another throttle refused it)."""
        retention = conf.LEDGER_DAYS * 86400
        if not retention:
            return
        slot = Slot(hour_of(now), account, prefix, category)
        key = field_key(slot, LEDGER_ADMITTED)
        if (self.cache.get(key) or 0) > 0:
            self.cache.decr(key)
            self._refuse(slot, OTHER_THROTTLE, 1, now, retention)

    def add_refusals(self, account: int, prefix: str, category: str, refusals: Sequence[Refusals]) -> None:
        retention = conf.LEDGER_DAYS * 86400
        if not retention:
            return
        for refusal in refusals:
            slot = Slot(hour_of(refusal.last), account, prefix, category)
            self._refuse(slot, refusal.rule, refusal.n, refusal.last, retention)

    def read(self, scopes: Sequence[LedgerScope], hours: Sequence[int]) -> dict[Slot, Counts]:
        wanted: dict[str, tuple[Slot, str]] = {}
        for scope in scopes:
            rules = sorted({*scope.rules, OTHER_THROTTLE})
            whats = [
                LEDGER_ADMITTED,
                LEDGER_REFUSED,
                LEDGER_LAST_REFUSED,
                *(f"{LEDGER_REFUSED}:{r}" for r in rules),
            ]
            for hour in hours:
                for prefix in scope.prefixes:
                    for category in scope.categories:
                        slot = Slot(hour, scope.account, prefix, category)
                        for what in whats:
                            wanted[field_key(slot, what)] = (slot, what)
        keys = list(wanted)
        found: dict[Slot, Counts] = {}
        for start in range(0, len(keys), READ_BATCH):
            for key, value in self.cache.get_many(keys[start : start + READ_BATCH]).items():
                slot, what = wanted[key]
                counts = found.setdefault(slot, Counts())
                if what == LEDGER_ADMITTED:
                    counts.admitted = int(value)
                elif what == LEDGER_REFUSED:
                    counts.refused = int(value)
                elif what == LEDGER_LAST_REFUSED:
                    counts.last_refused = int(value)
                elif int(value):
                    counts.refused_by[what[len(LEDGER_REFUSED) + 1 :]] = int(value)
        return {slot: counts for slot, counts in found.items() if counts}

    def _refuse(self, slot: Slot, rule: str, n: int, at: int, retention: int) -> None:
        self._add(slot, LEDGER_REFUSED, n, at, retention)
        self._add(slot, f"{LEDGER_REFUSED}:{rule}", n, at, retention)
        key = field_key(slot, LEDGER_LAST_REFUSED)
        if at > (self.cache.get(key) or 0):
            self.cache.set(key, at, _timeout(slot, at, retention))

    def _add(self, slot: Slot, what: str, n: int, at: int, retention: int) -> None:
        key, timeout = field_key(slot, what), _timeout(slot, at, retention)
        self.cache.add(key, 0, timeout)
        try:
            self.cache.incr(key, n)
        except ValueError:  # Evicted or expired between add and incr.
            self.cache.set(key, n, timeout)


def _timeout(slot: Slot, at: int, retention: int) -> int:
    """Seconds from ``at`` (ms) until the retention after the slot's hour ends: its keys' expiry."""
    return max(1, (slot.hour + 1) * HOUR + retention - at // 1000)
