"""The self-serve status view: the caller's effective limit rules and their use, counting against none.

As GitHub's ``GET /rate_limit``: route :class:`RateLimitStatusView` (e.g. at
``api/ratelimit/``) and a client with an API key reads, for every category in
use, each rule it meets: its limit, how much is used and remains, and when it
resets. The view reads the store with ``Storage.peek`` only; its own requests
count in a per-key bucket of ``RATELIMIT_TIERS_STATUS_RATE``, apart from the
key's rules.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NoReturn

from django.db import DatabaseError
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.exceptions import NotAuthenticated
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from ratelimit_tiers.algorithms import Decision, parse_rate
from ratelimit_tiers.authentication import APIKeyAuthentication
from ratelimit_tiers.breaker import guarded
from ratelimit_tiers.categories import in_use
from ratelimit_tiers.conf import conf
from ratelimit_tiers.exceptions import DatabaseUnavailable, RateLimited, StorageUnavailable, StoreUnavailable
from ratelimit_tiers.identity import KeyIdentity
from ratelimit_tiers.names import ACTIVE, status_bucket
from ratelimit_tiers.policies import load_policy
from ratelimit_tiers.refusals import fail, refuse
from ratelimit_tiers.rules import SCOPES, Rule, applicable
from ratelimit_tiers.storage import Unusable, get_storage

#: The ``policy`` a 429 of the status view's own bucket names.
STATUS_POLICY = "status"


class RuleStatusSerializer(serializers.Serializer[dict[str, Any]]):
    category = serializers.CharField(help_text=_("The endpoint category this count is kept for."))
    name = serializers.CharField(help_text=_("The rule's name, as in RateLimit-Policy and 429 bodies."))
    rate = serializers.CharField(help_text=_("The rule as RATE text, e.g. 60/min or 1000/day."))
    scope = serializers.ChoiceField(
        choices=SCOPES, help_text=_("key: this key's own count; account: shared by the account's keys.")
    )
    limit = serializers.IntegerField(min_value=1)
    used = serializers.IntegerField(min_value=0)
    remaining = serializers.IntegerField(min_value=0)
    reset = serializers.IntegerField(help_text=_("Unix time when remaining next grows."))
    quota = serializers.BooleanField(
        help_text=_("A calendar quota (day, week, month), not a sliding window.")
    )


class RateLimitStatusSerializer(serializers.Serializer[dict[str, Any]]):
    tier = serializers.CharField()
    rules = RuleStatusSerializer(many=True)


class RateLimitStatusView(GenericAPIView[Any]):
    """``GET``: the caller's effective rules in every category in use, with limit, used, remaining, reset.

    Needs an API key (401 otherwise). Counts against none of the key's
    rules: the store is only peeked at. Past ``RATELIMIT_TIERS_STATUS_RATE``
    requests of one key, 429 with ``Retry-After`` (``policy`` ``"status"``).
    While the store is down the answer is 503, failing open or closed: the
    counts it would report are in the store.
    """

    authentication_classes = [APIKeyAuthentication]
    permission_classes = [IsAuthenticated]
    # Not TierRateThrottle: a status request must count against none of the key's rules.
    throttle_classes = []
    serializer_class = RateLimitStatusSerializer
    pagination_class = None

    def permission_denied(
        self, request: Request, message: str | None = None, code: str | None = None
    ) -> NoReturn:
        """401 with a JSON body of this app's shape: ``code`` and ``detail``."""
        if not request.successful_authenticator:
            raise not_authenticated()
        super().permission_denied(request, message, code)  # pragma: no cover - only IsAuthenticated here.

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        identity = request.auth
        if not isinstance(identity, KeyIdentity):  # A subclass that lets in other credentials.
            raise not_authenticated()
        try:
            self.count_status_request(identity.prefix)
            # The key's effective rules as the store would load them (two queries).
            policy = load_policy(identity.prefix)
            if policy.state != ACTIVE:  # Revoked, deleted... since the key authenticated.
                raise refuse(request, fail(policy.state))
            body = {"tier": policy.tier, "rules": self.rule_states(request, identity, policy.rules)}
        except StorageUnavailable as exc:
            raise StoreUnavailable() from exc
        except DatabaseError as exc:
            raise DatabaseUnavailable() from exc
        return Response(self.get_serializer(body).data)

    def count_status_request(self, prefix: str) -> None:
        """Count the request in the key's status bucket; :class:`RateLimited` once past its rate."""
        text = conf.STATUS_RATE
        if text is None:
            return
        decision = guarded(get_storage().hit_rate, status_bucket(prefix), parse_rate(text))
        if decision is not None and not decision.allowed:
            raise RateLimited(replace(decision, policy=STATUS_POLICY))

    def rule_states(
        self, request: Request, identity: KeyIdentity, rules: tuple[Rule, ...]
    ) -> list[dict[str, Any]]:
        """Each rule's state in each category in use, as ``Storage.peek`` sees it (nothing counted)."""
        states = []
        storage = get_storage()
        for category in in_use(rules):
            outcome = guarded(storage.peek, identity.prefix, identity.account_id, category)
            if isinstance(outcome, Unusable):  # Revoked, expired... since the key authenticated.
                raise refuse(request, fail(outcome.state))
            decisions = {decision.policy: decision for decision in outcome.decisions}
            for rule in applicable(rules, category):
                decision = decisions.get(rule.name)
                if decision is not None:  # Else the store's policy predates a change: reloaded next time.
                    states.append(rule_state(category, rule, decision))
        return states


def not_authenticated() -> NotAuthenticated:
    detail = NotAuthenticated.default_detail
    return NotAuthenticated({"code": NotAuthenticated.default_code, "detail": detail})


def rule_state(category: str, rule: Rule, decision: Decision) -> dict[str, Any]:
    return {
        "category": category,
        "name": rule.name,
        "rate": rule.rate,
        "scope": rule.scope,
        "limit": decision.limit,
        "used": decision.limit - decision.remaining,
        "remaining": decision.remaining,
        "reset": decision.reset_at,
        "quota": decision.quota,
    }
