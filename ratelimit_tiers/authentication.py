from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from ratelimit_tiers import crypto, key_state
from ratelimit_tiers.breaker import guarded
from ratelimit_tiers.clients import refuse
from ratelimit_tiers.conf import conf
from ratelimit_tiers.exceptions import DatabaseUnavailable, StorageUnavailable
from ratelimit_tiers.last_used import record as record_use
from ratelimit_tiers.models import Account, APIKey
from ratelimit_tiers.names import ACTIVE, KeyState
from ratelimit_tiers.storage import get_storage

MAX_HEADER_LENGTH = 200

MESSAGES = {
    "malformed_key": _("Malformed API key."),
    "unknown_key": _("Unknown API key."),
    KeyState.REVOKED: _("This API key has been revoked."),
    KeyState.EXPIRED: _("This API key has expired."),
    KeyState.INACTIVE: _("The account of this API key is disabled."),
    KeyState.UNKNOWN: _("Unknown API key."),
}


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
        with self._lock:
            item = self._items.get(prefix)
            if item is None:
                return None
            if self.clock() >= item[0]:
                del self._items[prefix]
                return None
            self._items.move_to_end(prefix)
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


@receiver([post_save, post_delete], sender=Account, dispatch_uid="rlt_identities_account")
def _account_changed(instance: Account, **kwargs: Any) -> None:
    identities.forget(account_id=instance.pk)  # Its name may have changed.


@receiver([post_save, post_delete], sender=APIKey, dispatch_uid="rlt_identities_key")
def _key_changed(instance: APIKey, **kwargs: Any) -> None:
    identities.forget(prefix=instance.prefix)  # Its account may have changed.


def fail(code: str) -> AuthenticationFailed:
    return AuthenticationFailed({"code": code, "detail": MESSAGES[code]}, code=code)


class APIKeyAuthentication(BaseAuthentication):
    """``Authorization: Api-Key <prefix>.<secret>`` (header and keyword are settings).

    Returns ``(AccountUser, KeyIdentity)``. Malformed keys are refused before
    any lookup; known keys are verified in constant time against the stored
    hash. Whether the key is still usable (revoked, expired, account disabled)
    is decided by :class:`~ratelimit_tiers.throttling.TierRateThrottle` in the
    same store round trip as the count; views without it check here instead.
    If the store fails and fails open, the key's state comes from the database
    (:mod:`~ratelimit_tiers.key_state`). If the database fails when a request
    needs it, the answer is :class:`~ratelimit_tiers.exceptions.DatabaseUnavailable`
    (503 with ``Retry-After``).
    """

    @sensitive_variables("raw", "parts", "secret")
    def authenticate(self, request: Request) -> tuple[AccountUser, KeyIdentity] | None:
        raw = self.get_raw_key(request)
        if raw is None:
            return None
        parts = crypto.split_key(raw)
        if parts is None:
            raise refuse(request, fail("malformed_key"))
        prefix, secret = parts
        try:
            identity = identities.get(prefix) or self._load(prefix)
            if identity is None or not crypto.verify_secret(secret, identity.hashed_secret):
                raise refuse(request, fail("unknown_key"))
            if not self._throttled_by_tier(request):
                state = self._state(prefix)
                if state != ACTIVE:
                    raise refuse(request, fail(state))
        except DatabaseError as exc:  # A 503 to retry, not a 500.
            raise DatabaseUnavailable() from exc
        record_use(identity.key_id, prefix)
        return AccountUser(identity.account_id, identity.account_name), identity

    def authenticate_header(self, request: Request) -> str:
        return conf.KEY_KEYWORD or "Api-Key"

    @sensitive_variables("value")
    def get_raw_key(self, request: Request) -> str | None:
        header = conf.KEY_HEADER
        value = request.headers.get(header)
        if value is None:
            return None
        if len(value) > MAX_HEADER_LENGTH:
            raise refuse(request, fail("malformed_key"))
        keyword = conf.KEY_KEYWORD
        if keyword:
            scheme, _sep, value = value.strip().partition(" ")
            if scheme.lower() != keyword.lower():
                # Another scheme (e.g. Bearer) belongs to another authenticator.
                return None
        return value.strip()

    @staticmethod
    def _load(prefix: str) -> KeyIdentity | None:
        row = (
            APIKey.objects.filter(prefix=prefix)
            .values_list("pk", "hashed_secret", "account_id", "account__name")
            .first()
        )
        if row is None:
            return None
        identity = KeyIdentity(row[0], prefix, row[1], row[2], row[3])
        identities.put(identity)
        return identity

    @staticmethod
    def _state(prefix: str) -> str:
        """The key's state for a view the throttle does not check: from the store, else the database."""
        try:
            return guarded(lambda: get_storage().peek(prefix, "read").state)
        except StorageUnavailable as exc:
            return key_state.without_store(prefix, exc)  # As the throttle does.

    @staticmethod
    def _throttled_by_tier(request: Request) -> bool:
        from ratelimit_tiers.throttling import TierRateThrottle

        view: Any = (request.parser_context or {}).get("view")
        if view is None:
            return False
        return any(isinstance(t, TierRateThrottle) for t in view.get_throttles())
