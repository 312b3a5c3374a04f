"""The refusals a process served from its own memory, counted until the usage ledger has them.

A refusal from :mod:`~ratelimit_tiers.local_refusals` costs no store round
trip, so the store's script cannot count it. It is counted here, per key,
category, hour and rule, and reaches the ledger in a batch: carried by the
next check of that key and category that goes to the store (the one that
renews the refusal, about once a second in a flood: no command more), or
else sent by :mod:`~ratelimit_tiers.tally_flush` once it is
:data:`STALE_SECONDS` old, and at process exit. A batch that fails to reach
the store is not retried (nothing is counted twice; with the store down, it
is not counted).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from ratelimit_tiers.algorithms import Decision
from ratelimit_tiers.conf import conf
from ratelimit_tiers.ledger import Refusals, hour_of

#: Seconds a tallied refusal waits for a check of its key to carry it, before the flush sends it.
#: Longer than a local refusal's life (``LOCAL_REFUSAL_SECONDS``, 1 s) plus its renewal, so that in a
#: flood the renewing check carries the batch.
STALE_SECONDS = 2.0


class TallyKey(NamedTuple):
    prefix: str
    account: int
    category: str


class _Entry(NamedTuple):
    since: float  # monotonic: the first refusal of the batch
    counts: dict[tuple[int, str], tuple[int, int]]  # (hour, rule) -> (count, last ms)


class RefusalTally:
    """Refusals not yet in the store, by key, category, hour and rule."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._items: dict[TallyKey, _Entry] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._items)

    def add(self, prefix: str, account: int, category: str, decision: Decision) -> None:
        """Count one refusal served without the store: ``decision`` as served (its rule, its ``now``)."""
        if not conf.LEDGER_DAYS:
            return
        at = round(decision.now * 1000)
        slot = (hour_of(at), decision.policy)
        key = TallyKey(prefix, account, category)
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                entry = self._items[key] = _Entry(self.clock(), {})
            count, last = entry.counts.get(slot, (0, 0))
            entry.counts[slot] = (count + 1, max(last, at))

    def take(self, prefix: str, account: int, category: str) -> tuple[Refusals, ...]:
        """The batch of one key and category, now the caller's to send."""
        if not self._items:
            return ()
        with self._lock:
            entry = self._items.pop(TallyKey(prefix, account, category), None)
        return () if entry is None else _refusals(entry)

    def take_stale(self, age: float = STALE_SECONDS) -> list[tuple[TallyKey, tuple[Refusals, ...]]]:
        """The batches that waited ``age`` seconds or more (all of them with ``age`` 0)."""
        if not self._items:
            return []
        now = self.clock()
        with self._lock:
            keys = [key for key, entry in self._items.items() if now - entry.since >= age]
            return [(key, _refusals(self._items.pop(key))) for key in keys]

    def restore(self, key: TallyKey, refusals: tuple[Refusals, ...]) -> None:
        """Put back a batch that was taken but not sent (its check never reached the ledger)."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                entry = self._items[key] = _Entry(self.clock(), {})
            for refusal in refusals:
                slot = (hour_of(refusal.last), refusal.rule)
                count, last = entry.counts.get(slot, (0, 0))
                entry.counts[slot] = (count + refusal.n, max(last, refusal.last))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _refusals(entry: _Entry) -> tuple[Refusals, ...]:
    return tuple(Refusals(rule, count, last) for (_hour, rule), (count, last) in entry.counts.items())


tally = RefusalTally()
