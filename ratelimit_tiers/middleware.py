"""Response headers (``X-RateLimit-*``, the IETF draft's fields) formatted from ``request.ratelimit``."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from ratelimit_tiers import context, early_refusals
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

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        """With ``RATELIMIT_TIERS_EARLY_REFUSALS``, a locally noted 429 before DRF runs (issue 15)."""
        if not conf.EARLY_REFUSALS:
            return None
        return early_refusals.response(request, view_func, view_kwargs)


def add_headers(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    attached = context.of(request)
    if attached is not None:
        decision = attached.decision
        response.headers[LIMIT] = str(decision.limit)
        response.headers[REMAINING] = str(decision.remaining)
        response.headers[RESET] = str(decision.reset_at)
        if conf.IETF_HEADERS:
            add_ietf_headers(response, attached.decisions or (decision,), attached.category)
    return response


def add_ietf_headers(response: HttpResponseBase, decisions: Sequence[Decision], category: str) -> None:
    """Every rule the request met as its own quota policy, named after the rule (a Structured Fields String).

    ``RateLimit-Policy: "read-60s";q=60;w=60, "all-day";q=1000;w=86400`` states
    the policies (``w``: a quota's whole period) and ``RateLimit:
    "read-60s";r=59;t=12, "all-day";r=998;t=40000`` what remains of each and
    the seconds until it grows; for a rule that refuses (a 429), until it
    admits a retry: the longest of those is ``Retry-After``. A decision without
    a rule name (an ad-hoc bucket) is named after ``category``.
    """
    policies, states = [], []
    for decision in decisions:
        name = sf_string(decision.policy or category)
        reset = decision.retry_after if not decision.allowed else max(0, math.ceil(decision.reset_after))
        policies.append(f"{name};q={decision.limit};w={decision.window}")
        states.append(f"{name};r={decision.remaining};t={reset}")
    response.headers[POLICY] = ", ".join(policies)
    response.headers[RATELIMIT] = ", ".join(states)


def sf_string(value: str) -> str:
    """Serialize an RFC 8941 String: ``"`` and ``\\`` escaped, other non-printable-ASCII as ``_``.

    A view's ``ratelimit_category`` is free text (the checks refuse names a rule
    could not have, but a header must never fail the response).
    """
    value = "".join(char if " " <= char <= "~" else "_" for char in value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
