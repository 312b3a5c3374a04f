"""drf-spectacular integration (optional dependency): imported by the app only when it is installed.

Set ``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "ratelimit_tiers.openapi.AutoSchema"`` and every
operation of a view throttled by :class:`~ratelimit_tiers.throttling.TierRateThrottle` documents
the ``X-RateLimit-*`` headers (and the IETF fields when ``RATELIMIT_TIERS_IETF_HEADERS`` is on)
on its responses, plus its 429 response with ``Retry-After``. The API key scheme is documented
for :class:`~ratelimit_tiers.authentication.APIKeyAuthentication` whatever the schema class.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.plumbing import ResolvedComponent

from ratelimit_tiers.conf import conf
from ratelimit_tiers.middleware import LIMIT, POLICY, RATELIMIT, REMAINING, RESET
from ratelimit_tiers.throttling import TierRateThrottle

RETRY_AFTER = "Retry-After"

HEADERS: dict[str, dict[str, Any]] = {
    LIMIT: {
        "description": "Requests allowed per window for this key and endpoint category.",
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
        "description": 'Quota policy (draft-ietf-httpapi-ratelimit-headers), e.g. "read";q=60;w=60.',
        "schema": {"type": "string"},
    },
    RATELIMIT: {
        "description": 'Remaining quota and seconds to reset, e.g. "read";r=59;t=12.',
        "schema": {"type": "string"},
    },
}

RATE_LIMITED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Body of a 429: the limit, and when a retry is admitted.",
    "properties": {
        "code": {"type": "string", "example": "rate_limited", "description": "Always rate_limited."},
        "detail": {"type": "string"},
        "limit": {"type": "integer"},
        "window": {"type": "integer", "description": "Seconds."},
        "retry_after": {"type": "integer", "description": "Seconds, as in Retry-After."},
        "reset": {"type": "integer", "description": "Unix time, as in X-RateLimit-Reset."},
    },
    "required": ["code", "detail", "limit", "window", "retry_after", "reset"],
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
        return operation

    def is_tier_throttled(self) -> bool:
        return any(isinstance(throttle, TierRateThrottle) for throttle in self.view.get_throttles())

    def header(self, name: str) -> dict[str, Any]:
        return self.component(ResolvedComponent.HEADER, name, HEADERS[name])

    def component(self, kind: str, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        resolved = ResolvedComponent(name=name, type=kind, schema=schema, object=name)  # type: ignore[no-untyped-call]
        self.registry.register_on_missing(resolved)
        return resolved.ref
