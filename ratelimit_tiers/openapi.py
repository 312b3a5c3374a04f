"""drf-spectacular integration (optional dependency): imported by the app only when it is installed.

Set ``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "ratelimit_tiers.openapi.AutoSchema"`` and every
operation of a view throttled by :class:`~ratelimit_tiers.throttling.TierRateThrottle` documents
the ``X-RateLimit-*`` headers (and the IETF fields when ``RATELIMIT_TIERS_IETF_HEADERS`` is on)
on its responses, plus its 429 response with ``Retry-After`` (and its 403 when it declares a cost).
The status view (:class:`~ratelimit_tiers.views.RateLimitStatusView`) documents its own 401, 429 and
503. The API key scheme is documented for
:class:`~ratelimit_tiers.authentication.APIKeyAuthentication` whatever the schema class.
"""

from __future__ import annotations

import copy
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.plumbing import ResolvedComponent

from ratelimit_tiers.conf import conf
from ratelimit_tiers.middleware import LIMIT, POLICY, RATELIMIT, REMAINING, RESET
from ratelimit_tiers.throttling import TierRateThrottle
from ratelimit_tiers.views import RateLimitStatusView

RETRY_AFTER = "Retry-After"

HEADERS: dict[str, dict[str, Any]] = {
    LIMIT: {
        "description": "Limit of the rule with the fewest requests remaining (of those the request met).",
        "schema": {"type": "integer", "minimum": 0},
    },
    REMAINING: {"description": "Requests left right now.", "schema": {"type": "integer", "minimum": 0}},
    RESET: {
        "description": "Unix time when Remaining next grows; on a 429, when a retry is admitted.",
        "schema": {"type": "integer"},
    },
    RETRY_AFTER: {
        "description": "Whole seconds to wait before retrying; waiting that long is enough.",
        "schema": {"type": "integer", "minimum": 1},
    },
    POLICY: {
        "description": (
            "Every rule the request met (draft-ietf-httpapi-ratelimit-headers), "
            'e.g. "read-60s";q=60;w=60, "all-day";q=1000;w=86400.'
        ),
        "schema": {"type": "string"},
    },
    RATELIMIT: {
        "description": 'What remains of each rule and seconds until it grows, e.g. "read-60s";r=59;t=12.',
        "schema": {"type": "string"},
    },
}

RATE_LIMITED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Body of a 429: the refusing rule, its limit, and when a retry is admitted.",
    "properties": {
        "code": {
            "type": "string",
            "enum": ["rate_limited", "quota_exceeded"],
            "description": "quota_exceeded for a calendar quota (day, week, month), else rate_limited.",
        },
        "detail": {"type": "string"},
        "limit": {"type": "integer"},
        "window": {"type": "integer", "description": "Seconds (a quota's: its whole period)."},
        "retry_after": {"type": "integer", "description": "Seconds, as in Retry-After."},
        "reset": {"type": "integer", "description": "Unix time, as in X-RateLimit-Reset."},
        "policy": {"type": "string", "description": "The refusing rule's name, as in RateLimit-Policy."},
    },
    "required": ["code", "detail", "limit", "window", "retry_after", "reset"],
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Body of this app's errors: a code and a sentence.",
    "properties": {"code": {"type": "string"}, "detail": {"type": "string"}},
    "required": ["code", "detail"],
}

TOO_EXPENSIVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Body of a 403: the request costs more than a rule admits in a whole period.",
    "properties": {
        "code": {"type": "string", "enum": ["cost_exceeds_limit"]},
        "detail": {"type": "string"},
        "cost": {"type": "integer"},
        "limit": {"type": "integer"},
        "policy": {"type": "string", "description": "The rule's name."},
    },
    "required": ["code", "detail", "cost", "limit", "policy"],
}


class APIKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "ratelimit_tiers.authentication.APIKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        keyword = conf.KEY_KEYWORD
        return {
            "type": "apiKey",
            "in": "header",
            "name": conf.KEY_HEADER,
            "description": f"`{keyword} <prefix>.<secret>`" if keyword else "`<prefix>.<secret>`",
        }


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's ``AutoSchema`` that documents ``TierRateThrottle``'s headers and 429."""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation: dict[str, Any] | None = super().get_operation(*args, **kwargs)
        if operation is not None and isinstance(self.view, RateLimitStatusView):
            return self.status_operation(operation)
        if operation is None or not self.is_tier_throttled():
            return operation
        names = [LIMIT, REMAINING, RESET] + ([POLICY, RATELIMIT] if conf.IETF_HEADERS else [])
        responses: dict[str, Any] = operation.setdefault("responses", {})
        for response in responses.values():
            if "$ref" not in response:
                response.setdefault("headers", {}).update({name: self.header(name) for name in names})
        body = self.component(ResolvedComponent.SCHEMA, "RateLimitExceeded", RATE_LIMITED_SCHEMA)
        responses["429"] = {
            "description": "Rate limit exceeded for this key and endpoint category.",
            "headers": {name: self.header(name) for name in [RETRY_AFTER, *names]},
            "content": {"application/json": {"schema": body}},
        }
        if hasattr(self.view, "ratelimit_cost") or hasattr(self.view, "get_ratelimit_cost"):
            expensive = self.component(ResolvedComponent.SCHEMA, "RequestTooExpensive", TOO_EXPENSIVE_SCHEMA)
            responses["403"] = {
                "description": "The request costs more than a rule of the key admits in a whole period.",
                "content": {"application/json": {"schema": expensive}},
            }
        return operation

    def status_operation(self, operation: dict[str, Any]) -> dict[str, Any]:
        """The status view's errors: no key, past ``RATELIMIT_TIERS_STATUS_RATE``, the store down."""
        responses: dict[str, Any] = operation.setdefault("responses", {})
        error = self.component(ResolvedComponent.SCHEMA, "RateLimitError", ERROR_SCHEMA)
        body = self.component(ResolvedComponent.SCHEMA, "RateLimitExceeded", RATE_LIMITED_SCHEMA)
        responses["401"] = {
            "description": "No valid API key.",
            "content": {"application/json": {"schema": error}},
        }
        responses["429"] = {
            "description": "This key made more status requests than RATELIMIT_TIERS_STATUS_RATE.",
            "headers": {RETRY_AFTER: self.header(RETRY_AFTER)},
            "content": {"application/json": {"schema": body}},
        }
        responses["503"] = {
            "description": "The rate-limit store (or the database) is unavailable; retry shortly.",
            "headers": {RETRY_AFTER: self.header(RETRY_AFTER)},
            "content": {"application/json": {"schema": error}},
        }
        return operation

    def is_tier_throttled(self) -> bool:
        return any(isinstance(throttle, TierRateThrottle) for throttle in self.view.get_throttles())

    def header(self, name: str) -> dict[str, Any]:
        return self.component(ResolvedComponent.HEADER, name, HEADERS[name])

    def component(self, kind: str, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        # A copy: drf-spectacular's enum postprocessing rewrites the schemas it is given, in place.
        copied = copy.deepcopy(schema)
        resolved = ResolvedComponent(name=name, type=kind, schema=copied, object=name)  # type: ignore[no-untyped-call]
        self.registry.register_on_missing(resolved)
        return resolved.ref
