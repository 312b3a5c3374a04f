"""Whether a key may be used, read from the database: for when the limiter's store cannot say.

The store answers this on every check, from the policy it keeps beside the
counters. When the store is down, or skipped by the circuit breaker, failing
open means "admit without counting", never "accept any key": a revoked,
expired, disabled or deleted key is still refused. :func:`state` reads the
key's row and each process keeps the answer for :data:`TTL` seconds, so an
outage costs one indexed query per key per process every few seconds, not
one per request. Saving a key or an account drops this process's answers at
once (:mod:`~ratelimit_tiers.invalidation`); other processes see the change within :data:`TTL` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from ratelimit_tiers.conf import conf
from ratelimit_tiers.exceptions import StorageUnavailable, StoreUnavailable
from ratelimit_tiers.models import APIKey
from ratelimit_tiers.names import ACTIVE, EXPIRED, UNKNOWN
from ratelimit_tiers.policies import state_of

#: Seconds a process trusts a key's state read from the database.
TTL = 5.0
#: Keys whose state a process remembers; past that it starts over.
MAX_KEYS = 10_000


class _Entry(NamedTuple):
    state: str
    expires_at: float | None  # Unix time, for an active key with an expiry.
    read_at: float


class KeyStates:
    """A per-process memory of key states read from the database, each kept for :data:`TTL` seconds."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._items: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def state(self, prefix: str) -> str:
        """``ACTIVE``, ``REVOKED``, ``EXPIRED``, ``INACTIVE`` or ``UNKNOWN`` (no such key).

        Raises ``django.db.DatabaseError`` if the row must be read and cannot be.
        """
        now = self.clock()
        entry = self._items.get(prefix)
        if entry is None or not entry.read_at <= now < entry.read_at + TTL:
            entry = self._read(prefix, now)
        if entry.expires_at is not None and now >= entry.expires_at:
            return EXPIRED
        return entry.state

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def _read(self, prefix: str, now: float) -> _Entry:
        row = (
            APIKey.objects.filter(prefix=prefix)
            .values_list("revoked", "account__is_active", "expires_at")
            .first()
        )
        if row is None:
            entry = _Entry(UNKNOWN, None, now)
        else:
            revoked, account_active, expires = row
            state = state_of(revoked=revoked, account_active=account_active)
            expires_at = expires.timestamp() if expires is not None and state == ACTIVE else None
            entry = _Entry(state, expires_at, now)
        with self._lock:
            if len(self._items) >= MAX_KEYS:
                self._items.clear()
            self._items[prefix] = entry
        return entry


states = KeyStates()


def state(prefix: str) -> str:
    """The key's state from its database row (see :class:`KeyStates`)."""
    return states.state(prefix)


def without_store(prefix: str, exc: StorageUnavailable) -> str:
    """The key's state when the store failed: 503 when failing closed, else from its database row.

    What failing open means, for the throttle and for views only authentication checks.
    """
    if not conf.FAIL_OPEN:
        raise StoreUnavailable() from exc
    return states.state(prefix)
