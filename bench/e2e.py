"""The end-to-end benchmark's URLconf: one view body, served bare, through this app, and through DRF.

bench/run.py serves it under gunicorn with a settings module of its own (the
testproject's, with ``ROOT_URLCONF = "e2e"`` and bench/ on the path, see
bench/load.py), so every view runs the same middleware: the testproject's,
``RateLimitHeadersMiddleware`` included.
"""

from __future__ import annotations

from typing import Any

from django.urls import path
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from ratelimit_tiers.authentication import APIKeyAuthentication
from ratelimit_tiers.throttling import TierRateThrottle

#: The rate of both throttled views: far above what the load sends, so everything is admitted,
#: and at most ``EXACT_MAX_LIMIT`` so that an exact tier runs the exact log (above it, the counter).
#: Per second: DRF's state is the list of every admission in the window, so on a per-minute
#: window its cost would grow with the length of the run.
LIMIT, WINDOW = 10_000, 1

BODY = {"id": 1, "name": "widget", "quantity": 3}


class BareView(APIView):
    """The body alone: no authentication, no throttle."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(BODY)


class OursView(BareView):
    authentication_classes = [APIKeyAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = [TierRateThrottle]


class OursDRFPathView(OursView):
    """``OursView`` whose every answer DRF builds: a view with its own exception handler (this one
    is DRF's, unchanged) gets no early refusal (``RATELIMIT_TIERS_EARLY_REFUSALS``, on in the benchmark)."""

    def get_exception_handler(self) -> Any:
        return super().get_exception_handler()


class AuthOnlyView(OursView):
    """This app's authentication without its throttle: the authenticator checks the key's state itself."""

    throttle_classes = []


class HeaderUser:
    """A user named by a header: what a token authenticator returns, minus its query."""

    is_authenticated = True

    def __init__(self, pk: str) -> None:
        self.pk = pk


class HeaderAuthentication(BaseAuthentication):
    """``Authorization: User <id>``: a user from the header alone, without a query."""

    def authenticate(self, request: Request) -> tuple[HeaderUser, None] | None:
        scheme, _sep, value = request.headers.get("Authorization", "").partition(" ")
        return (HeaderUser(value), None) if scheme == "User" and value else None


class SameRateUserThrottle(UserRateThrottle):
    """DRF's ``UserRateThrottle`` on the default cache (django-redis, the same Redis) at the same rate."""

    rate = f"{LIMIT}/s"  # WINDOW is 1 s.


class DRFView(BareView):
    authentication_classes = [HeaderAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = [SameRateUserThrottle]


urlpatterns = [
    path("bare/", BareView.as_view()),
    path("ours/", OursView.as_view()),
    path("ours-drf/", OursDRFPathView.as_view()),
    path("auth-only/", AuthOnlyView.as_view()),
    path("drf/", DRFView.as_view()),
]
