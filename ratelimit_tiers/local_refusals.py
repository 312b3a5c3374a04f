"""Refusals a process serves from its own memory, for a bounded time: no store round trip, no SQL.

A client hammering an exhausted key, or a client network over its
``INVALID_KEY_RATE``, would otherwise cost the store one command per request
just to hear "no" again. When the store refuses (a :class:`Decision` that is
not allowed), :data:`notes` remembers "refused until T" (T: now plus the
decision's ``reset_after``, on this process's monotonic clock from when the
answer arrived) and refuses that key and category itself, with the same
``limit``, ``X-RateLimit-Reset`` and a ``Retry-After`` never shorter than the
time left until T. A note never admits: every admission is the store's.

Admin changes that can admit earlier (a reset, an upgrade, an override) reach
a process within ``RATELIMIT_TIERS_LOCAL_REFUSAL_SECONDS`` (1 s): a note serves
at most that long after the store's answer; then the next request asks the
store, while the process's other requests for that key keep being refused
until its answer comes (at most :data:`RENEWAL_SECONDS` more). So a flood on
an exhausted key costs about one store command per process per second. In
the process that makes a change, ``invalidation`` drops the notes at once.

:data:`unknown_prefixes` does the same for key prefixes the database does not
know: a client retrying a deleted key costs one indexed query per process per
``LOCAL_REFUSAL_SECONDS``, not one per request.

Both are LRUs of at most :data:`MAX_NOTES` entries. Looking up takes no lock
(a dict read is atomic); writes and evictions do.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from django.core.signals import setting_changed
from django.dispatch import receiver

from ratelimit_tiers.algorithms import Decision
from ratelimit_tiers.conf import conf

#: Entries each memory keeps at most; the least recently noted go first.
MAX_NOTES = 10_000
#: Seconds the process's other requests keep being refused while one asks the store to renew a note.
RENEWAL_SECONDS = 0.1


class Note(NamedTuple):
    """A refusal by the store, and when this process stops serving it."""

    decision: Decision
    tier: str
    noted: float  # monotonic: when the store's answer arrived
    ends: float  # monotonic: T, when the store would admit a request at the latest (Retry-After's basis)
    serves_until: float  # monotonic: min(asked + reset_after, noted + LOCAL_REFUSAL_SECONDS) or a renewal's
    renewing: bool = False

    def refusal_at(self, now: float) -> Decision:
        """The store's refusal as of ``now``: same limit and reset, ``reset_after`` what is left.

        In whole milliseconds as the store's, the elapsed time rounded down, so
        the time left (and ``Retry-After``) is never shorter than it really is
        (a nanosecond of slack for float error: the answer arrived at least a
        round trip after the store decided).
        """
        decision = self.decision
        elapsed_ms = math.floor((now - self.noted) * 1000 + 1e-6)
        stamp_ms, reset_ms = round(decision.now * 1000), round(decision.reset_after * 1000)
        # The rule that refused (its name, whether it is a quota) stays the same.
        return decision._replace(
            allowed=False, reset_after=(reset_ms - elapsed_ms) / 1000, now=(stamp_ms + elapsed_ms) / 1000
        )


class RefusalNotes:
    """The store's refusals this process serves itself, by (key prefix or bucket name, category)."""

    def __init__(self, size: int = MAX_NOTES, clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.clock = size, clock
        #: Bumped by every :meth:`forget`: a refusal asked for before it is not noted after it.
        self.epoch = 0
        self._items: OrderedDict[tuple[str, str], Note] = OrderedDict()
        self._lock = threading.Lock()

    def refusal(self, name: str, category: str) -> tuple[Decision, str] | None:
        """The refusal to serve without the store, with the key's tier; ``None``: ask the store."""
        items = self._items
        if not items:
            return None
        key = (name, category)
        note = items.get(key)
        if note is None:
            return None
        now = self.clock()
        if now < note.serves_until:
            return note.refusal_at(now), note.tier
        with self._lock:
            current = items.get(key)
            if current is not note:  # Renewed or claimed by another thread meanwhile.
                if current is not None and now < current.serves_until:
                    return current.refusal_at(now), current.tier
                return None
            if note.renewing or now >= note.ends:
                del items[key]
                return None
            # This request renews the note; the others are refused until its answer.
            items[key] = note._replace(serves_until=min(note.ends, now + RENEWAL_SECONDS), renewing=True)
        return None

    def has(self, name: str, category: str) -> bool:
        """Whether a note of ``name`` and ``category`` is kept, live or not; no lock, no renewal claimed."""
        return (name, category) in self._items

    def note(
        self,
        name: str,
        category: str,
        decision: Decision,
        tier: str = "",
        epoch: int | None = None,
        asked: float | None = None,
    ) -> None:
        """Remember the store's refusal ``decision``, unless a :meth:`forget` came since ``epoch``.

        ``asked``: this clock when the store was asked. The store decided
        between then and now, so its reset lies between ``asked`` and ``now``
        plus ``reset_after``: ``Retry-After`` counts from now (never too
        short), and the note stops serving from ``asked`` (never refusing past
        the store's reset, however slow the answer was; then the store decides).
        """
        seconds = conf.LOCAL_REFUSAL_SECONDS
        if not seconds or decision.allowed:
            return
        now = self.clock()
        ends = now + decision.reset_after
        earliest = ends if asked is None else asked + decision.reset_after
        note = Note(decision, tier, now, ends, min(earliest, now + seconds))
        key = (name, category)
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return
            self._items[key] = note
            self._items.move_to_end(key)
            if len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop(self, name: str, category: str) -> None:
        """Forget the note of an admitted key and category, if any (a renewal the store admitted)."""
        if self._items and (name, category) in self._items:
            with self._lock:
                self._items.pop((name, category), None)

    def forget(self, prefixes: Iterable[str]) -> None:
        """Drop every note of these keys (all categories): they may be admitted earlier now."""
        gone = set(prefixes)
        with self._lock:
            self.epoch += 1
            for key in [key for key in self._items if key[0] in gone]:
                del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self.epoch += 1
            self._items.clear()


class UnknownPrefixes:
    """Key prefixes the database did not know, each kept ``LOCAL_REFUSAL_SECONDS``.

    A key created in this process drops its prefix at once (``invalidation``);
    in another process a prefix can only be remembered if someone used it
    before it existed, which its randomness makes practically impossible.
    """

    def __init__(self, size: int = MAX_NOTES, clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.clock = size, clock
        self._items: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, prefix: str) -> bool:
        until = self._items.get(prefix)
        return until is not None and self.clock() < until

    def add(self, prefix: str) -> None:
        seconds = conf.LOCAL_REFUSAL_SECONDS
        if not seconds:
            return
        until = self.clock() + seconds
        with self._lock:
            self._items[prefix] = until
            self._items.move_to_end(prefix)
            if len(self._items) > self.size:
                self._items.popitem(last=False)

    def forget(self, prefixes: Iterable[str]) -> None:
        with self._lock:
            for prefix in prefixes:
                self._items.pop(prefix, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


notes = RefusalNotes()
unknown_prefixes = UnknownPrefixes()


@receiver(setting_changed, dispatch_uid="rlt_local_refusals_setting_changed")
def _reset(setting: str, **kwargs: Any) -> None:
    # Another store, or other limits: what it refused says nothing any more.
    if setting == "CACHES" or setting.startswith("RATELIMIT_TIERS_"):
        notes.clear()
        unknown_prefixes.clear()
