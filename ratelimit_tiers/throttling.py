"""The throttle: counts each API-key request in the store and decides on it, shadow mode included."""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from ratelimit_tiers import context, key_state, tally_flush, view_throttles
from ratelimit_tiers.algorithms import METHOD_CATEGORIES, READ, Decision
from ratelimit_tiers.breaker import guarded
from ratelimit_tiers.conf import conf
from ratelimit_tiers.context import RateLimitContext
from ratelimit_tiers.exceptions import (
    CostExceedsLimit,
    DatabaseUnavailable,
    RateLimited,
    RequestTooExpensive,
    StorageUnavailable,
)
from ratelimit_tiers.identity import KeyIdentity
from ratelimit_tiers.local_refusals import notes
from ratelimit_tiers.names import ACTIVE
from ratelimit_tiers.refusal_tally import tally
from ratelimit_tiers.refusals import fail, refuse
from ratelimit_tiers.signals import check_quota, send_refused
from ratelimit_tiers.storage import Unusable, get_storage

logger = logging.getLogger("ratelimit_tiers")

_last_outage_log = 0.0


def category_of(view_category: str | None, method: str | None) -> str:
    """The view's ``ratelimit_category``, else the HTTP method's category."""
    return view_category or METHOD_CATEGORIES.get(method or "GET", READ)


def note_name(category: str, cost: int) -> str:
    """The category a refusal is noted under in :mod:`~ratelimit_tiers.local_refusals`.

    A refusal of one cost says nothing of a cheaper request: notes are per category and cost.
    """
    return category if cost == 1 else f"{category}*{cost}"


def observe_local_refusal(
    sender: type,
    request: HttpRequest,
    prefix: str,
    account: int | None,
    category: str,
    decision: Decision,
    tier: str,
) -> None:
    """What a locally served refusal leaves: the context the headers describe, the log line, the signal,
    and its count in the usage ledger, carried by the key's next store call (``refusal_tally``).

    Shared by the throttle and :mod:`~ratelimit_tiers.early_refusals` (``sender=TierRateThrottle``).
    """
    if account is not None:
        tally.add(prefix, account, category, decision)
        tally_flush.ensure_running()
    context.attach(request, RateLimitContext(decision, category))
    send_refused(sender, request, prefix, tier, category, decision, False)


class TierRateThrottle(BaseThrottle):
    """Per-API-key limits from the key's account and tier, per endpoint category.

    The category is the view's ``ratelimit_category`` attribute, else it
    follows the HTTP method (GET/HEAD/OPTIONS read, POST/PUT/PATCH write,
    DELETE delete). Requests that did not authenticate with an API key are not
    this throttle's business. Every admitted request counts, whatever the
    view answers; a refused one does not, whichever throttle of the view
    refused it. Over the limit it follows DRF's contract: ``allow_request``
    returns ``False`` and :meth:`wait` says how long, so that DRF asks every
    throttle of the view and calls ``view.throttled()`` with the longest wait;
    the answer is :class:`~ratelimit_tiers.exceptions.RateLimited` (429 with
    that ``Retry-After`` and a JSON body). A revoked, expired or unknown key
    gets 401 (raised: no throttling decision), also when the store is down and
    the request fails open.
    """

    #: The refusal :meth:`wait` answers for (DRF builds a throttle per request).
    refused: Decision | None = None

    #: Refuses keys that cannot be used (revoked, expired...), so authentication need not check
    #: them itself: read by :class:`~ratelimit_tiers.authentication.APIKeyAuthentication`.
    checks_key_state: ClassVar[bool] = True

    def allow_request(self, request: Request, view: Any) -> bool:
        identity = request.auth
        self.refused = None
        if not isinstance(identity, KeyIdentity):
            return True
        storage, category = get_storage(), self.get_category(request, view)
        cost = self.get_cost(request, view)
        noted_as = note_name(category, cost)
        served = notes.refusal(identity.prefix, noted_as)
        if served is not None:  # Refused by the store moments ago: no round trip (see local_refusals).
            return self.refuse_locally(request, view, identity.prefix, category, *served)
        epoch, asked = notes.epoch, notes.clock()
        try:
            try:
                outcome = guarded(storage.hit, identity.prefix, identity.account_id, category, cost)
            except CostExceedsLimit as exc:
                raise RequestTooExpensive(exc) from exc
            except StorageUnavailable as exc:
                state = self.store_failed(exc, identity.prefix)
                if state == ACTIVE:
                    return True  # Failed open: admitted, not counted.
                outcome = Unusable(state)
            if isinstance(outcome, Unusable):
                # Revoked, expired...: limited per client network, never on the key's counter.
                raise refuse(request, fail(outcome.state))
            decision, tier = outcome.decision, outcome.tier
            if decision is None:
                return True  # No rule applies: nothing to count, nothing to say.
            context.attach(request._request, RateLimitContext(decision, category, outcome.decisions))
            if not outcome.allowed:
                # The store's answer holds the tier and its shadow flag: a refusal costs no second round trip.
                shadow = bool(conf.SHADOW or outcome.shadow)
                send_refused(type(self), request._request, identity.prefix, tier, category, decision, shadow)
                if shadow:
                    return True  # Shadow mode: counted, logged and signalled, never refused.
                notes.note(identity.prefix, noted_as, decision, tier, epoch, asked)
                return self.refuse(view, decision)
            notes.drop(identity.prefix, noted_as)
            check_quota(type(self), request._request, identity.prefix, category, decision, tier)
            self.give_back_if_refused(view, request, identity, category, cost, decision)
        except DatabaseError as exc:  # Loading a policy: a 503 to retry, not a 500.
            raise DatabaseUnavailable() from exc
        return True

    def wait(self) -> float | None:
        return None if self.refused is None else float(self.refused.retry_after)

    def refuse(self, view: Any, decision: Decision) -> bool:
        """Refuse the request: ``False``, and the view answers :class:`RateLimited` for it.

        DRF's ``check_throttles`` asks the view's other throttles, then calls
        ``view.throttled()`` once with the longest of their waits and ours:
        the 429 carries this app's JSON body and that wait.
        """
        self.refused = decision
        if getattr(view, "throttled", None) is None:
            raise RateLimited(decision)  # Not a DRF view: no one collects the waits.

        def throttled(drf_request: Request, wait: float | None) -> None:
            raise RateLimited(decision, wait)

        view.throttled = throttled
        return False

    def refuse_locally(
        self, request: Request, view: Any, prefix: str, category: str, decision: Decision, tier: str
    ) -> bool:
        """Refuse as the store did moments ago, its ``decision`` as of now: same headers, signal and log."""
        identity = request.auth
        account = identity.account_id if isinstance(identity, KeyIdentity) else None
        observe_local_refusal(type(self), request._request, prefix, account, category, decision, tier)
        return self.refuse(view, decision)

    def give_back_if_refused(
        self, view: Any, request: Request, identity: KeyIdentity, category: str, cost: int, decision: Decision
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
        throttles = view_throttles.of(view)
        if throttles.fixed and throttles.only is type(self):
            return  # The view's only throttle: no other can refuse (kept per view class).

        def refused(drf_request: Request, wait: float | None) -> None:
            attached = context.of(request._request)
            if attached is not None and attached.decision is decision:
                context.detach(request._request)
                prefix = identity.prefix
                try:
                    guarded(get_storage().give_back, prefix, identity.account_id, category, cost, decision)
                except StorageUnavailable as exc:
                    logger.warning(
                        "Could not give back a request of %s another throttle refused: %s", prefix, exc
                    )
            throttled(drf_request, wait)

        view.throttled = refused

    def get_category(self, request: Request, view: Any) -> str:
        # The Django request's own method: DRF's Request proxies it through __getattr__, at a cost.
        return category_of(getattr(view, "ratelimit_category", None), request._request.method)

    def get_cost(self, request: Request, view: Any) -> int:
        """What the request costs in every rule: the view's ``get_ratelimit_cost(request)``, else its
        ``ratelimit_cost`` attribute, else 1. Raises ``ImproperlyConfigured`` unless a whole number >= 1."""
        method = getattr(view, "get_ratelimit_cost", None)
        cost = method(request) if method is not None else getattr(view, "ratelimit_cost", 1)
        if type(cost) is not int or cost < 1:
            raise ImproperlyConfigured(
                f"{type(view).__name__}'s ratelimit cost must be a whole number of at least 1, not {cost!r}."
            )
        return cost

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
