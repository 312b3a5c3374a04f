"""Endpoint categories: those the project's throttled views declare, and every one in use.

A view counts in its ``ratelimit_category`` if it has one, else in the
built-in category of its HTTP method (``algorithms.METHOD_CATEGORIES``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

from ratelimit_tiers.algorithms import CATEGORIES, METHOD_CATEGORIES, READ
from ratelimit_tiers.rules import Rule
from ratelimit_tiers.throttling import TierRateThrottle


def declared() -> dict[str, list[str]]:
    """Each category a view throttled by :class:`TierRateThrottle` declares, with those views' names."""
    found: dict[str, list[str]] = {}
    for cls in throttled_views():
        category = getattr(cls, "ratelimit_category", None)
        if category:
            name = view_name(cls)
            if name not in found.setdefault(category, []):
                found[category].append(name)
    return found


def throttled_views() -> dict[type, set[str]]:
    """Each view class the URLconf routes to that :class:`TierRateThrottle` throttles, with the
    categories its requests count in: its ``ratelimit_category``, else its HTTP methods'."""
    found: dict[type, set[str]] = {}
    for cls, methods in _view_classes(get_resolver().url_patterns):
        throttles = getattr(cls, "throttle_classes", ())
        if any(isinstance(t, type) and issubclass(t, TierRateThrottle) for t in throttles):
            category = getattr(cls, "ratelimit_category", None)
            counted = {category} if category else {METHOD_CATEGORIES.get(m.upper(), READ) for m in methods}
            found.setdefault(cls, set()).update(counted)
    return found


def view_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def in_use(rules: Iterable[Rule] = ()) -> list[str]:
    """The built-in categories, those ``rules`` name, and those views declare: where counters may be."""
    names = {*CATEGORIES, *(rule.category for rule in rules if rule.category), *declared()}
    return [*CATEGORIES, *sorted(names - set(CATEGORIES))]


def _view_classes(patterns: Iterable[Any]) -> Iterator[tuple[type, list[str]]]:
    """Each view class with the HTTP methods a URL routes to it."""
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _view_classes(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            # DRF's as_view() keeps the class as ``cls``, Django's as ``view_class``.
            callback = pattern.callback
            cls = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
            if isinstance(cls, type):
                # A viewset's URL maps methods to actions; a view answers the methods it defines.
                actions = getattr(callback, "actions", None)
                handled = getattr(cls, "http_method_names", ())
                yield cls, list(actions) if actions else [m for m in handled if hasattr(cls, m)]
