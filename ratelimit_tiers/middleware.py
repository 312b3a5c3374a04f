"""Response headers (``X-RateLimit-*``, the IETF draft's fields) formatted from ``request.ratelimit``."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from ratelimit_tiers import context
from ratelimit_tiers.algorithms import Decision
from ratelimit_tiers.conf import conf

LIMIT = "X-RateLimit-Limit"
REMAINING = "X-RateLimit-Remaining"
RESET = "X-RateLimit-Reset"
# draft-ietf-httpapi-ratelimit-headers-10, behind RATELIMIT_TIERS_IETF_HEADERS.
POLICY = "RateLimit-Policy"
RATELIMIT = "RateLimit"


class RateLimitHeadersMiddleware:
    """Adds ``X-RateLimit-*`` headers to responses of views a throttle decided on.

    The throttle does the work; this only formats its decision
    (``request.ratelimit``, see :mod:`~ratelimit_tiers.context`), so headers
    always agree with the decision taken. Sync and async capable.
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(self.get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        response = self.get_response(request)
        return add_headers(request, response)  # type: ignore[arg-type]

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)  # type: ignore[misc]
        return add_headers(request, response)


def add_headers(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    attached = context.of(request)
    if attached is not None:
        decision = attached.decision
        response.headers[LIMIT] = str(decision.limit)
        response.headers[REMAINING] = str(decision.remaining)
        response.headers[RESET] = str(decision.reset_at)
        if conf.IETF_HEADERS:
            add_ietf_headers(response, decision, attached.category)
    return response


def add_ietf_headers(response: HttpResponseBase, decision: Decision, category: str) -> None:
    """One quota policy per endpoint category, named after it (a Structured Fields String).

    ``RateLimit-Policy: "read";q=60;w=60`` states the policy and
    ``RateLimit: "read";r=59;t=12`` the key's remaining quota and the seconds
    until it grows (on a 429, until a retry is admitted: ``Retry-After``).
    """
    name = sf_string(category)
    reset = decision.retry_after if not decision.allowed else max(0, math.ceil(decision.reset_after))
    response.headers[POLICY] = f"{name};q={decision.limit};w={decision.window}"
    response.headers[RATELIMIT] = f"{name};r={decision.remaining};t={reset}"


def sf_string(value: str) -> str:
    """Serialize an RFC 8941 String: ``"`` and ``\\`` escaped, other non-printable-ASCII as ``_``.

    A view's ``ratelimit_category`` is free text; a header must never fail the response.
    """
    value = "".join(char if " " <= char <= "~" else "_" for char in value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
