from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from ratelimit_tiers.throttling import get_decision

LIMIT = "X-RateLimit-Limit"
REMAINING = "X-RateLimit-Remaining"
RESET = "X-RateLimit-Reset"


class RateLimitHeadersMiddleware:
    """Adds ``X-RateLimit-*`` headers to responses of views a throttle decided on.

    The throttle does the work; this only formats its decision, so headers
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
    decision = get_decision(request)
    if decision is not None:
        response.headers[LIMIT] = str(decision.limit)
        response.headers[REMAINING] = str(decision.remaining)
        response.headers[RESET] = str(decision.reset_at)
    return response
