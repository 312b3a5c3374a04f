"""Endpoint categories: those the project's throttled views declare, and every one in use.

A view counts in its ``ratelimit_category`` if it has one, else in the
built-in category of its HTTP method (``algorithms.METHOD_CATEGORIES``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

from ratelimit_tiers.algorithms import CATEGORIES
from ratelimit_tiers.rules import Rule
from ratelimit_tiers.throttling import TierRateThrottle


def declared() -> dict[str, list[str]]:
    """Each category a view throttled by :class:`TierRateThrottle` declares, with those views' names."""
    found: dict[str, list[str]] = {}
    for cls in _view_classes(get_resolver().url_patterns):
        category = getattr(cls, "ratelimit_category", None)
        throttles = getattr(cls, "throttle_classes", ())
        if category and any(isinstance(t, type) and issubclass(t, TierRateThrottle) for t in throttles):
            name = f"{cls.__module__}.{cls.__qualname__}"
            if name not in found.setdefault(category, []):
                found[category].append(name)
    return found


def in_use(rules: Iterable[Rule] = ()) -> list[str]:
    """The built-in categories, those ``rules`` name, and those views declare: where counters may be."""
    names = {*CATEGORIES, *(rule.category for rule in rules if rule.category), *declared()}
    return [*CATEGORIES, *sorted(names - set(CATEGORIES))]


def _view_classes(patterns: Iterable[Any]) -> Iterator[type]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _view_classes(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            # DRF's as_view() keeps the class as ``cls``, Django's as ``view_class``.
            cls = getattr(pattern.callback, "cls", None) or getattr(pattern.callback, "view_class", None)
            if isinstance(cls, type):
                yield cls
