"""What the throttle decided about a request, on the request for what comes after: ``request.ratelimit``.

As ``django-htmx`` attaches ``request.htmx``: one typed object, set by
:class:`~ratelimit_tiers.throttling.TierRateThrottle` on the Django
``HttpRequest`` and read by the middleware, which so needs no import of the
throttle. Absent when no throttle of this app decided (no API key, a view
without the throttle, failing open).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ratelimit_tiers.algorithms import Decision

#: The attribute of the Django ``HttpRequest`` that holds the :class:`RateLimitContext`.
ATTRIBUTE = "ratelimit"


class RateLimitContext(NamedTuple):
    """The decision on a request and the endpoint category it was counted in (immutable, cheap to build).

    ``decision`` is the one the ``X-RateLimit-*`` headers describe
    (:func:`~ratelimit_tiers.algorithms.headline`); ``decisions`` holds the
    decision of every rule the request met.
    """

    decision: Decision
    category: str
    decisions: tuple[Decision, ...] = ()


def attach(request: Any, context: RateLimitContext) -> None:
    setattr(request, ATTRIBUTE, context)


def detach(request: Any) -> None:
    if hasattr(request, ATTRIBUTE):
        delattr(request, ATTRIBUTE)


def of(request: Any) -> RateLimitContext | None:
    """The context the throttle attached to this Django ``HttpRequest``, if any."""
    context = getattr(request, ATTRIBUTE, None)
    return context if isinstance(context, RateLimitContext) else None
