"""The app's HTTP answers: DRF exceptions with JSON bodies (also exports :mod:`ratelimit_tiers.errors`)."""

from __future__ import annotations

import math
from typing import Any

from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from rest_framework import status
from rest_framework.exceptions import APIException, Throttled

from ratelimit_tiers.algorithms import Decision
from ratelimit_tiers.errors import CircuitOpen, CostExceedsLimit, RatelimitTiersError, StorageUnavailable

__all__ = [
    "CircuitOpen",
    "CostExceedsLimit",
    "DatabaseUnavailable",
    "RateLimited",
    "RatelimitTiersError",
    "RequestTooExpensive",
    "StorageUnavailable",
    "StoreUnavailable",
    "Unavailable",
]


class RateLimited(Throttled):
    """429 whose JSON body says what the limit is and when to retry.

    DRF's exception handler adds ``Retry-After`` from ``wait``: the
    decision's, or ``wait`` when longer (the longest of all the view's
    throttles, in whole seconds).
    """

    default_code = "rate_limited"

    def __init__(self, decision: Decision, wait: float | None = None) -> None:
        # Not Throttled.__init__: it would translate DRF's own detail and wrap it in an ErrorDetail,
        # only for this body to replace it, on every 429, also those served from local_refusals
        # (issue 15: 26-39 us a refusal, now 14). It sets nothing else but ``wait``, set below.
        seconds = decision.retry_after if wait is None else max(decision.retry_after, math.ceil(wait))
        numbers = {"limit": decision.limit, "window": decision.window}
        # Translated now, in the request's language, as the lazy string's % did, without its proxy.
        message = (
            gettext("Quota exceeded: %(limit)d requests per period of %(window)d seconds.")
            if decision.quota
            else gettext("Rate limit exceeded: %(limit)d requests per %(window)d seconds.")
        )
        body: dict[str, Any] = {
            "code": "quota_exceeded" if decision.quota else self.default_code,
            "detail": message % numbers,
            **numbers,
            "retry_after": seconds,
            "reset": decision.reset_at,
        }
        if decision.policy:
            body["policy"] = decision.policy
        self.detail = body
        self.wait = seconds


class RequestTooExpensive(APIException):
    """403: the request costs more than a rule of the key admits in a whole period: no retry will do."""

    status_code = status.HTTP_403_FORBIDDEN
    default_code = "cost_exceeds_limit"

    def __init__(self, error: CostExceedsLimit) -> None:
        super().__init__()
        body: dict[str, Any] = {
            "code": self.default_code,
            "detail": _(
                "This request costs %(cost)d, more than the %(count)d a period of rule %(rule)s admits."
            )
            % {"cost": error.cost, "count": error.count, "rule": error.rule},
            "cost": error.cost,
            "limit": error.count,
            "policy": error.rule,
        }
        self.detail = body


class Unavailable(APIException):
    """503 with ``Retry-After`` (DRF's exception handler adds it from ``wait``) and a JSON body."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE

    def __init__(self, wait: int = 1) -> None:
        super().__init__({"code": self.default_code, "detail": self.default_detail})
        self.wait = wait


class StoreUnavailable(Unavailable):
    """503 answered in fail-closed mode while the store is down."""

    default_detail = _("Rate limiting is temporarily unavailable; retry shortly.")
    default_code = "ratelimit_unavailable"


class DatabaseUnavailable(Unavailable):
    """503 answered when a request needs the database (a key to look up, a policy to load) and it fails."""

    default_detail = _("API keys cannot be checked right now; retry shortly.")
    default_code = "database_unavailable"
