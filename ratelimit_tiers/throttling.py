from __future__ import annotations

import logging
import time
from typing import Any

from django.db import DatabaseError
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from ratelimit_tiers import key_state
from ratelimit_tiers.algorithms import METHOD_CATEGORIES, READ, Decision
from ratelimit_tiers.authentication import KeyIdentity, fail
from ratelimit_tiers.breaker import guarded
from ratelimit_tiers.clients import refuse
from ratelimit_tiers.conf import conf
from ratelimit_tiers.exceptions import DatabaseUnavailable, RateLimited, StorageUnavailable
from ratelimit_tiers.policies import ACTIVE
from ratelimit_tiers.signals import check_quota, send_refused
from ratelimit_tiers.storage import Unusable, get_storage

logger = logging.getLogger("ratelimit_tiers")

#: Attribute of the Django ``HttpRequest`` holding the :class:`Decision` for the middleware.
REQUEST_ATTRIBUTE = "ratelimit"
#: Attribute of the Django ``HttpRequest`` holding the decision's endpoint category.
CATEGORY_ATTRIBUTE = "ratelimit_category"

_last_outage_log = 0.0


class TierRateThrottle(BaseThrottle):
    """Per-API-key limits from the key's account and tier, per endpoint category.

    The category is the view's ``ratelimit_category`` attribute, else it
    follows the HTTP method (GET/HEAD/OPTIONS read, POST/PUT/PATCH write,
    DELETE delete). Requests that did not authenticate with an API key are not
    this throttle's business. Every admitted request counts, whatever the
    view answers; a refused one does not, whichever throttle of the view
    refused it. Over the limit it raises
    :class:`~ratelimit_tiers.exceptions.RateLimited` (429 with ``Retry-After``
    and a JSON body) at once, before throttles listed after it are asked; a
    revoked, expired or unknown key gets 401, also when the store is down and
    the request fails open.
    """

    def allow_request(self, request: Request, view: Any) -> bool:
        identity = request.auth
        if not isinstance(identity, KeyIdentity):
            return True
        storage, category = get_storage(), self.get_category(request, view)
        try:
            try:
                outcome = guarded(storage.hit, identity.prefix, category)
            except StorageUnavailable as exc:
                state = self.store_failed(exc, identity.prefix)
                if state == ACTIVE:
                    return True  # Failed open: admitted, not counted.
                outcome = Unusable(state)
            if isinstance(outcome, Unusable):
                # Revoked, expired...: limited per client network, never on the key's counter.
                raise refuse(request, fail(outcome.state))
            decision, tier = outcome.decision, outcome.tier
            setattr(request._request, REQUEST_ATTRIBUTE, decision)
            setattr(request._request, CATEGORY_ATTRIBUTE, category)
            if not decision.allowed:
                # The store's answer holds the tier and its shadow flag: a refusal costs no second round trip.
                if send_refused(
                    type(self), request._request, identity.prefix, category, decision, tier, outcome.shadow
                ):
                    return True  # Shadow mode: counted, logged and signalled, never refused.
                raise RateLimited(decision)
            check_quota(type(self), request._request, identity.prefix, category, decision, tier)
            self.give_back_if_refused(view, request, identity.prefix, category, decision)
        except DatabaseError as exc:  # Loading a policy: a 503 to retry, not a 500.
            raise DatabaseUnavailable() from exc
        return True

    def give_back_if_refused(
        self, view: Any, request: Request, prefix: str, category: str, decision: Decision
    ) -> None:
        """If another throttle of the view refuses the request, uncount it and drop our headers.

        DRF's ``check_throttles`` asks every throttle, then calls
        ``view.throttled()`` once if any refused: the one moment all verdicts
        are in. A 429 never costs tier quota, and it carries the refusing
        throttle's ``Retry-After`` without ``X-RateLimit-*`` headers that would
        say requests remain.
        """
        throttled = getattr(view, "throttled", None)
        if throttled is None:
            return

        def refused(drf_request: Request, wait: float | None) -> None:
            if getattr(request._request, REQUEST_ATTRIBUTE, None) is decision:
                delattr(request._request, REQUEST_ATTRIBUTE)
                try:
                    guarded(get_storage().give_back, prefix, category, decision)
                except StorageUnavailable as exc:
                    logger.warning(
                        "Could not give back a request of %s another throttle refused: %s", prefix, exc
                    )
            throttled(drf_request, wait)

        view.throttled = refused

    def get_category(self, request: Request, view: Any) -> str:
        category = getattr(view, "ratelimit_category", None)
        return category or METHOD_CATEGORIES.get(request.method or "GET", READ)

    def store_failed(self, exc: StorageUnavailable, prefix: str) -> str:
        """The key's state when the store failed: logged, then 503 (fail closed) or read from the database.

        Failing open admits without counting; a revoked, expired, disabled or
        deleted key is still refused (see :mod:`~ratelimit_tiers.key_state`).
        """
        global _last_outage_log
        now = time.monotonic()
        if now - _last_outage_log >= 10:  # One warning per 10 s per process, not per request.
            _last_outage_log = now
            logger.warning(
                "Rate-limit store unavailable (%s); failing %s.",
                exc,
                "open" if conf.FAIL_OPEN else "closed",
            )
        return key_state.without_store(prefix, exc)


def get_decision(request: Any) -> Decision | None:
    """The decision a throttle attached to this ``HttpRequest``, if any."""
    return getattr(request, REQUEST_ATTRIBUTE, None)
