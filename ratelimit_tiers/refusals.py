"""Refusing a request whose API key cannot be used: a 401 with its message, or 429 if the client keeps at it.

Unusable keys never touch a real key's counter: they count against the
client network's ``INVALID_KEY_RATE`` bucket instead.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import APIException, AuthenticationFailed

from ratelimit_tiers.algorithms import parse_rate
from ratelimit_tiers.breaker import guarded
from ratelimit_tiers.clients import client_network
from ratelimit_tiers.conf import conf
from ratelimit_tiers.exceptions import RateLimited, StorageUnavailable
from ratelimit_tiers.local_refusals import notes
from ratelimit_tiers.names import KeyState, client_bucket
from ratelimit_tiers.storage import get_storage

#: Refusal codes of keys that are not even looked up (else the code is the key's :class:`KeyState`).
MALFORMED_KEY = "malformed_key"
UNKNOWN_KEY = "unknown_key"

#: The ``detail`` of each refusal, by its ``code``.
MESSAGES = {
    MALFORMED_KEY: _("Malformed API key."),
    UNKNOWN_KEY: _("Unknown API key."),
    KeyState.REVOKED: _("This API key has been revoked."),
    KeyState.EXPIRED: _("This API key has expired."),
    KeyState.INACTIVE: _("The account of this API key is disabled."),
    KeyState.UNKNOWN: _("Unknown API key."),
}


def fail(code: str) -> AuthenticationFailed:
    """The 401 for a refusal ``code``: a key of another state than ``ACTIVE``, or the two above."""
    return AuthenticationFailed({"code": str(code), "detail": MESSAGES[code]}, code=str(code))


def refuse(request: Any, exc: APIException) -> APIException:
    """The error for a request whose API key cannot be used: ``exc`` (401), or 429.

    Counts the request against its client network's ``INVALID_KEY_RATE``
    bucket, which no real key's counter shares; once the network is over it,
    the answer is :class:`RateLimited` with ``Retry-After``, served from this
    process's memory for a while (:mod:`~ratelimit_tiers.local_refusals`). If
    the store is down the answer stays ``exc``.
    """
    text = conf.INVALID_KEY_RATE
    if not text:
        return exc
    name = client_bucket(client_network(request))
    served = notes.refusal(name, "")
    if served is not None:  # The network's bucket refused moments ago: no round trip.
        return RateLimited(served[0])
    rate = parse_rate(text)
    try:
        decision = guarded(lambda: get_storage().hit_rate(name, rate))
    except StorageUnavailable:
        return exc
    if decision is None or decision.allowed:
        return exc
    notes.note(name, "", decision)
    return RateLimited(decision)
