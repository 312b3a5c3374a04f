"""Signals for metrics and alerts, and the structured log lines sent with them.

They report what the throttle decided, shadow mode included; they decide nothing.

Both are sent by :class:`~ratelimit_tiers.throttling.TierRateThrottle` with
``sender=TierRateThrottle`` and these keyword arguments:

``request_throttled``
    ``request`` (the Django ``HttpRequest``), ``prefix`` (the key's public
    prefix), ``tier`` (its tier's name), ``category``, ``decision`` (the
    :class:`~ratelimit_tiers.algorithms.Decision`) and ``shadow`` (``True``
    when shadow mode let the request through).
``quota_low``
    The same minus ``shadow``, for an admitted request that left
    ``decision.remaining`` at or below ``RATELIMIT_TIERS_QUOTA_WARNING_RATIO``
    of the limit. Sent for every such request: dedupe in the receiver (e.g.
    with ``cache.add``) to alert once per window.

``counters_reset`` is sent with ``sender=APIKey`` and ``prefixes`` (a list) by
the admin's "reset counters" action and ``ratelimit_tiers_reset_key`` once the
keys' counters are cleared.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

from ratelimit_tiers.algorithms import Decision
from ratelimit_tiers.conf import conf

logger = logging.getLogger("ratelimit_tiers")

request_throttled = Signal()
quota_low = Signal()
counters_reset = Signal()


def send_refused(
    sender: type, request: Any, prefix: str, tier: str, category: str, decision: Decision, shadow: bool
) -> None:
    """Log and signal a refusal, or one that shadow mode turned into an admission (``shadow``)."""
    if logger.isEnabledFor(logging.INFO):  # A 429 flood is the hot path: no fields for a dropped record.
        fields = _fields(prefix, tier, category, decision)
        fields["shadow"] = shadow
        logger.info(
            "ratelimit event=%s prefix=%s tier=%s category=%s limit=%d window=%d retry_after=%d",
            "shadow_refusal" if shadow else "throttled",
            prefix,
            tier,
            category,
            decision.limit,
            decision.window,
            decision.retry_after,
            extra={"ratelimit": fields},
        )
    request_throttled.send(
        sender, request=request, prefix=prefix, tier=tier, category=category, decision=decision, shadow=shadow
    )


def check_quota(
    sender: type, request: Any, prefix: str, category: str, decision: Decision, tier: str
) -> None:
    """Send ``quota_low`` if the admitted request left the key near its limit."""
    if not quota_low.receivers:  # Cheaper than has_listeners(): the common case on the hot path.
        return
    if decision.remaining > conf.QUOTA_WARNING_RATIO * decision.limit or not quota_low.has_listeners(sender):
        return
    logger.debug(
        "ratelimit event=quota_low prefix=%s tier=%s category=%s limit=%d remaining=%d",
        prefix,
        tier,
        category,
        decision.limit,
        decision.remaining,
        extra={"ratelimit": _fields(prefix, tier, category, decision)},
    )
    quota_low.send(sender, request=request, prefix=prefix, tier=tier, category=category, decision=decision)


def _fields(prefix: str, tier: str, category: str, decision: Decision) -> dict[str, Any]:
    return {
        "prefix": prefix,
        "tier": tier,
        "category": category,
        "limit": decision.limit,
        "window": decision.window,
        "remaining": decision.remaining,
        "reset": decision.reset_at,
    }
