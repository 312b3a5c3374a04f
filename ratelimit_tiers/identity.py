"""Who a request authenticated as: the key's identity, its account as a user, and a per-process cache.

Built from immutable columns and the account's name only; whether the key may
still be used is not identity (see :mod:`~ratelimit_tiers.names`'s key states).
``invalidation`` drops cached identities when keys and accounts change.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property


@dataclass(frozen=True)
class KeyIdentity:
    """What a request authenticated with: ``request.auth``.

    Built from immutable columns only (a key's prefix and hash never change),
    so each process can keep it in memory; everything an operator can change
    is checked against the store on every request.
    """

    key_id: int
    prefix: str
    hashed_secret: str = field(repr=False)
    account_id: int
    account_name: str

    @cached_property
    def user(self) -> AccountUser:
        """``request.user`` for this key: built once per identity, which the cache keeps, not per request."""
        return AccountUser(self.account_id, self.account_name)


@dataclass(frozen=True)
class AccountUser:
    """``request.user`` for API-key requests: the account, without a query."""

    pk: int
    name: str
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False

    def __str__(self) -> str:
        return self.name


#: Seconds a process trusts a key's cached identity (its account and the
#: account's name) before reading it again: how long a change made elsewhere
#: (another process, ``update()``, raw SQL) can go unseen. Saves and deletes
#: in the same process drop the entries they affect at once.
IDENTITY_TTL = 30.0


class _IdentityCache:
    """A small per-process LRU of :class:`KeyIdentity` by prefix; misses are not kept.

    Entries expire after ``ttl`` seconds of ``clock`` (injectable for tests).
    """

    def __init__(
        self, size: int = 10_000, ttl: float = IDENTITY_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size, self.ttl, self.clock = size, ttl, clock
        self._items: OrderedDict[str, tuple[float, KeyIdentity]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, prefix: str) -> KeyIdentity | None:
        # No lock on a hit (every request): each step is one atomic operation of the
        # C OrderedDict, and a forget() racing with it loses nothing a lock would keep.
        item = self._items.get(prefix)
        if item is None:
            return None
        if self.clock() >= item[0]:
            with self._lock:
                if self._items.get(prefix) is item:  # Not replaced by a put() meanwhile.
                    del self._items[prefix]
            return None
        try:  # noqa: SIM105 - contextlib.suppress() costs more, on every request.
            self._items.move_to_end(prefix)
        except KeyError:  # Forgotten meanwhile: this request read it just before.
            pass
        return item[1]

    def put(self, identity: KeyIdentity) -> None:
        with self._lock:
            self._items[identity.prefix] = (self.clock() + self.ttl, identity)
            if len(self._items) > self.size:
                self._items.popitem(last=False)

    def forget(self, prefix: str | None = None, account_id: int | None = None) -> None:
        """Drop the identity of one key, or those of every key of an account."""
        with self._lock:
            if prefix is not None:
                self._items.pop(prefix, None)
            if account_id is not None:
                for stale in [p for p, (_, i) in self._items.items() if i.account_id == account_id]:
                    del self._items[stale]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


identities = _IdentityCache()
