"""Who is asking: an API key in a header, checked against its hash (its state too, if no throttle does)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from django.db import DatabaseError
from django.http.request import HttpHeaders
from django.views.decorators.debug import sensitive_variables
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from ratelimit_tiers import crypto, key_state, view_throttles
from ratelimit_tiers.algorithms import READ
from ratelimit_tiers.breaker import guarded
from ratelimit_tiers.conf import conf
from ratelimit_tiers.exceptions import DatabaseUnavailable, StorageUnavailable
from ratelimit_tiers.identity import AccountUser, KeyIdentity, identities
from ratelimit_tiers.last_used import record as record_use
from ratelimit_tiers.local_refusals import unknown_prefixes
from ratelimit_tiers.models import APIKey
from ratelimit_tiers.names import ACTIVE
from ratelimit_tiers.refusals import MALFORMED_KEY, UNKNOWN_KEY, fail, refuse
from ratelimit_tiers.storage import get_storage

MAX_HEADER_LENGTH = 200

#: ``RATELIMIT_TIERS_KEY_HEADER``'s name in ``request.META`` (``Authorization``: ``HTTP_AUTHORIZATION``).
wsgi_name = functools.lru_cache(maxsize=8)(HttpHeaders.to_wsgi_name)


#: What :func:`raw_key` answers for a header longer than ``MAX_HEADER_LENGTH``: a malformed key.
TOO_LONG = "\0too long"


@sensitive_variables("value")
def raw_key(meta: Mapping[str, Any]) -> str | None:
    """The key in a request's ``META`` (``None``: no key of this scheme), or :data:`TOO_LONG`.

    Also read by :mod:`~ratelimit_tiers.early_refusals`, before DRF runs.
    """
    # The header's WSGI name in META, as request.headers would look it up: building
    # that mapping of every header of the request costs more than the whole check.
    value: str | None = meta.get(wsgi_name(conf.KEY_HEADER))
    if value is None:
        return None
    if len(value) > MAX_HEADER_LENGTH:
        return TOO_LONG
    keyword = conf.KEY_KEYWORD
    if keyword:
        scheme, _sep, value = value.strip().partition(" ")
        if scheme.lower() != keyword.lower():
            # Another scheme (e.g. Bearer) belongs to another authenticator.
            return None
    return value.strip()


class APIKeyAuthentication(BaseAuthentication):
    """``Authorization: Api-Key <prefix>.<secret>`` (header and keyword are settings).

    Returns ``(AccountUser, KeyIdentity)``. Malformed keys are refused before
    any lookup; known keys are verified in constant time against the stored
    hash. Whether the key is still usable (revoked, expired, account disabled)
    is decided by :class:`~ratelimit_tiers.throttling.TierRateThrottle` in the
    same store round trip as the count; views without it (without a throttle
    whose class has a true ``checks_key_state``) check here instead.
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
            raise refuse(request, fail(MALFORMED_KEY))
        prefix, secret = parts
        try:
            identity = identities.get(prefix) or self._load(prefix)
            if identity is None or not crypto.verify_secret(secret, identity.hashed_secret):
                raise refuse(request, fail(UNKNOWN_KEY))
            if not self._state_checked_by_throttle(request):
                state = self._state(prefix, identity.account_id)
                if state != ACTIVE:
                    raise refuse(request, fail(state))
        except DatabaseError as exc:  # A 503 to retry, not a 500.
            raise DatabaseUnavailable() from exc
        record_use(identity.key_id, prefix)
        return identity.user, identity

    def authenticate_header(self, request: Request) -> str:
        return conf.KEY_KEYWORD or "Api-Key"

    def get_raw_key(self, request: Request) -> str | None:
        value = raw_key(request._request.META)
        if value is TOO_LONG:
            raise refuse(request, fail(MALFORMED_KEY))
        return value

    @staticmethod
    def _load(prefix: str) -> KeyIdentity | None:
        if prefix in unknown_prefixes:  # Not in the database a moment ago (see local_refusals).
            return None
        row = (
            APIKey.objects.filter(prefix=prefix)
            .values_list("pk", "hashed_secret", "account_id", "account__name")
            .first()
        )
        if row is None:
            unknown_prefixes.add(prefix)
            return None
        identity = KeyIdentity(row[0], prefix, row[1], row[2], row[3])
        identities.put(identity)
        return identity

    @staticmethod
    def _state(prefix: str, account: int) -> str:
        """The key's state for a view the throttle does not check: from the store, else the database."""
        try:
            return guarded(lambda: get_storage().peek(prefix, account, READ).state)
        except StorageUnavailable as exc:
            return key_state.without_store(prefix, exc)  # As the throttle does.

    @staticmethod
    def _state_checked_by_throttle(request: Request) -> bool:
        """Whether a throttle of the view checks the key's state, so that this need not.

        Such a throttle class says so with a true ``checks_key_state``
        (:class:`~ratelimit_tiers.throttling.TierRateThrottle` does), so this
        module needs no import of the throttle. Reads the view's
        ``throttle_classes`` without building throttles, once per view class
        (:mod:`~ratelimit_tiers.view_throttles`); a view that overrides
        ``get_throttles`` is asked for its throttles instead, which it may pick
        per request.
        """
        view: Any = (request.parser_context or {}).get("view")
        if view is None:
            return False
        throttles = view_throttles.of(view)
        if throttles.fixed:
            return throttles.checks_key_state
        return any(getattr(type(throttle), "checks_key_state", False) for throttle in view.get_throttles())
