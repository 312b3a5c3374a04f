"""Early refusals: a locally noted 429 answered from the middleware's ``process_view``, before DRF runs.

Behind ``RATELIMIT_TIERS_EARLY_REFUSALS`` (off by default). A request whose
API key has a live refusal note (:mod:`~ratelimit_tiers.local_refusals`) for
the view's category and cost would get a 429 from DRF without a store round
trip anyway; DRF would first build its ``Request``, negotiate, authenticate,
check permissions and throttles, and turn the exception into a response
(issue 15: that is most of what such a 429 costs). This answers the same
response itself: the same status, ``Retry-After``, JSON body (rendered by
DRF's ``JSONRenderer``), ``Allow``/``Vary`` headers, the same
``request_throttled`` signal and log line, and the middleware adds the same
``X-RateLimit-*`` headers.

Only where DRF's answer is known without running it: a DRF ``APIView`` (not
a viewset) that overrides none of the methods between dispatch and the
response, whose only throttle is :class:`TierRateThrottle` with a static cost,
whose first authenticator is :class:`APIKeyAuthentication`, whose permissions
admit any authenticated user, whose first renderer is ``JSONRenderer``,
without versioning, under DRF's default exception handler; a request that
asks for JSON (no ``Accept``, ``*/*`` or ``application/json``, no format
override) with a key whose identity the process has cached and whose secret
verifies. Everything else goes to DRF unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny, IsAuthenticated, IsAuthenticatedOrReadOnly
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings
from rest_framework.views import APIView, exception_handler
from rest_framework.viewsets import ViewSetMixin

from ratelimit_tiers import crypto, view_throttles
from ratelimit_tiers.authentication import TOO_LONG, APIKeyAuthentication, raw_key
from ratelimit_tiers.exceptions import RateLimited
from ratelimit_tiers.identity import identities
from ratelimit_tiers.last_used import record as record_use
from ratelimit_tiers.local_refusals import notes
from ratelimit_tiers.throttling import TierRateThrottle, category_of, note_name, observe_local_refusal

#: What DRF runs between ``dispatch`` and the response: a view overriding any of them is DRF's to serve.
DRF_METHODS = (
    "dispatch",
    "initialize_request",
    "initial",
    "get_format_suffix",
    "perform_content_negotiation",
    "get_content_negotiator",
    "get_renderers",
    "determine_version",
    "perform_authentication",
    "get_authenticators",
    "check_permissions",
    "get_permissions",
    "check_throttles",
    "get_throttles",
    "throttled",
    "handle_exception",
    "get_exception_handler",
    "get_exception_handler_context",
    "finalize_response",
    "default_response_headers",
    "allowed_methods",
)
#: Permissions every request authenticated with an API key passes.
OPEN_PERMISSIONS = (AllowAny, IsAuthenticated, IsAuthenticatedOrReadOnly)
#: ``Accept`` values for which DRF's default negotiation picks the first renderer as ``application/json``.
JSON_ACCEPTS = frozenset({None, "*/*", "application/json"})
JSON = "application/json"
#: View functions a process keeps facts for; past that it starts over (views are few).
MAX_VIEWS = 1024


class EarlyView(NamedTuple):
    """What a view's 429 depends on, read once per view function."""

    category: str | None  # The view's ``ratelimit_category``; ``None``: the method's.
    cost: int
    #: DRF's default response headers of the view (``Allow``; ``Vary: Accept`` with several renderers).
    vary: str | None
    allow: str


_views: dict[Callable[..., Any], EarlyView | None] = {}


def response(
    request: HttpRequest, view_func: Callable[..., Any], view_kwargs: dict[str, Any]
) -> HttpResponse | None:
    """The 429 DRF would answer from a local refusal note, or ``None``: let DRF serve the request."""
    try:
        view = _views[view_func]
    except KeyError:
        view = _views[view_func] = _read(view_func)
        if len(_views) > MAX_VIEWS:
            _views.clear()
    if view is None:
        return None
    meta = request.META
    if meta.get("HTTP_ACCEPT") not in JSON_ACCEPTS or api_settings.FORMAT_SUFFIX_KWARG in view_kwargs:
        return None
    override = api_settings.URL_FORMAT_OVERRIDE
    if override and meta.get("QUERY_STRING") and override in request.GET:
        return None
    raw = raw_key(meta)
    if raw is None or raw is TOO_LONG:
        return None
    parts = crypto.split_key(raw)
    if parts is None:
        return None
    prefix, secret = parts
    category = category_of(view.category, request.method)
    noted_as = note_name(category, view.cost)
    if not notes.has(prefix, noted_as):
        return None  # The common case, an admission: no hash computed.
    identity = identities.get(prefix)
    if identity is None or not crypto.verify_secret(secret, identity.hashed_secret):
        return None
    # From here on, as the throttle: the same call serves (and counts) a local refusal.
    served = notes.refusal(prefix, noted_as)
    if served is None:
        # The note ran out and this request claimed its renewal: the throttle must ask the store.
        notes.drop(prefix, noted_as)
        return None
    decision, tier = served
    record_use(identity.key_id, prefix)  # As authentication does for every request it admits.
    request.user, request.auth = identity.user, identity  # type: ignore[assignment, attr-defined]
    observe_local_refusal(TierRateThrottle, request, prefix, identity.account_id, category, decision, tier)
    return rate_limited(RateLimited(decision), view)


def rate_limited(exc: RateLimited, view: EarlyView) -> HttpResponse:
    """The response DRF builds for ``exc``: its exception handler's, finalized, rendered as JSON."""
    answer = HttpResponse(
        JSONRenderer().render(exc.detail, JSON, {}), status=exc.status_code, content_type=JSON
    )
    if exc.wait:  # As rest_framework.views.exception_handler.
        answer.headers["Retry-After"] = "%d" % exc.wait  # noqa: UP031 - DRF's very formatting.
    if view.vary is not None:
        answer.headers["Vary"] = view.vary
    answer.headers["Allow"] = view.allow
    return answer


def _read(view_func: Callable[..., Any]) -> EarlyView | None:
    """The facts of a view function DRF's answer can be known for, else ``None``."""
    cls = getattr(view_func, "cls", None)
    if not (inspect.isclass(cls) and issubclass(cls, APIView)) or issubclass(cls, ViewSetMixin):
        return None
    if any(getattr(cls, name, None) is not getattr(APIView, name) for name in DRF_METHODS):
        return None
    if getattr(cls, "view_is_async", False):
        return None
    try:
        instance = cls(**getattr(view_func, "initkwargs", {}))
        instance.setup(None)  # type: ignore[arg-type]  # As Django's View does (it adds ``head`` for a view with ``get``).
        headers = instance.default_response_headers
        fitting = _fits(instance)
    except Exception:  # A view that cannot be read this way is DRF's to serve.
        return None
    if not fitting:
        return None
    category = getattr(instance, "ratelimit_category", None)
    cost = getattr(instance, "ratelimit_cost", 1)
    if not (category is None or isinstance(category, str)) or type(cost) is not int or cost < 1:
        return None
    return EarlyView(category, cost, headers.get("Vary"), headers["Allow"])


def _fits(view: APIView) -> bool:
    throttles = view_throttles.of(view)
    authenticators = list(view.authentication_classes)
    renderers = list(view.renderer_classes)
    return (
        throttles.fixed
        and throttles.only is TierRateThrottle
        and not hasattr(view, "get_ratelimit_cost")
        and bool(authenticators)
        and authenticators[0] is APIKeyAuthentication
        and all(permission in OPEN_PERMISSIONS for permission in view.permission_classes)
        and bool(renderers)
        and renderers[0] is JSONRenderer
        and view.content_negotiation_class is DefaultContentNegotiation
        and view.versioning_class is None
        and view.get_exception_handler() is exception_handler
    )


@receiver(setting_changed, dispatch_uid="rlt_early_refusals_setting_changed")
def _reset(**kwargs: Any) -> None:
    # DRF's settings (the exception handler) or ours may have changed: read every view anew.
    _views.clear()
