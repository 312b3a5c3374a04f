"""Endpoint categories: those the project's throttled views declare, and every one in use.

A view counts in its ``ratelimit_category`` if it has one, else in the
built-in category of its HTTP method (``algorithms.METHOD_CATEGORIES``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

from ratelimit_tiers.algorithms import CATEGORIES, METHOD_CATEGORIES, READ
from ratelimit_tiers.rules import Rule
from ratelimit_tiers.throttling import TierRateThrottle


def declared() -> dict[str, list[str]]:
    """Each category a view throttled by :class:`TierRateThrottle` declares, with those views' names."""
    found: dict[str, list[str]] = {}
    for view in throttled_views():
        category = view.category
        # Not a string: no category name at all (check E030 reports it), and no sort order with names.
        if isinstance(category, str) and view.name not in found.setdefault(category, []):
            found[category].append(view.name)
    return found


@dataclass(frozen=True)
class ThrottledView:
    """A route of the URLconf to a view that :class:`TierRateThrottle` throttles.

    ``initkwargs`` are the attributes the route sets on the view (a viewset
    action's ``@action(ratelimit_category=..., ratelimit_cost=...)``), over
    its class's; ``methods`` the HTTP methods routed to it.
    """

    cls: type
    methods: tuple[str, ...]
    initkwargs: tuple[tuple[str, Any], ...] = ()
    actions: tuple[str, ...] = ()

    def attribute(self, name: str, default: Any = None) -> Any:
        return dict(self.initkwargs).get(name, getattr(self.cls, name, default))

    @property
    def name(self) -> str:
        name = f"{self.cls.__module__}.{self.cls.__qualname__}"
        return f"{name}.{'/'.join(self.actions)}" if self.actions else name

    @property
    def category(self) -> Any:
        """Its ``ratelimit_category`` (free: the checks say whether a rule could name it), or ``None``."""
        return self.attribute("ratelimit_category") or None

    @property
    def categories(self) -> set[str]:
        """The categories its requests count in: its own, else its methods' built-in ones."""
        if self.category:
            return {self.category}
        return {METHOD_CATEGORIES.get(method.upper(), READ) for method in self.methods}


def throttled_views() -> list[ThrottledView]:
    """Each route of the URLconf to a view :class:`TierRateThrottle` throttles."""
    found = []
    for view in _routes(get_resolver().url_patterns):
        throttles = view.attribute("throttle_classes", ())
        if any(isinstance(t, type) and issubclass(t, TierRateThrottle) for t in throttles):
            found.append(view)
    return found


def in_use(rules: Iterable[Rule] = ()) -> list[str]:
    """The built-in categories, those ``rules`` name, and those views declare: where counters may be."""
    names = {*CATEGORIES, *(rule.category for rule in rules if rule.category), *declared()}
    return [*CATEGORIES, *sorted(names - set(CATEGORIES))]


def _routes(patterns: Iterable[Any]) -> Iterator[ThrottledView]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            # DRF's as_view() keeps the class as ``cls``, Django's as ``view_class``.
            callback = pattern.callback
            cls = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
            if not isinstance(cls, type):
                continue
            initkwargs = getattr(callback, "initkwargs", None) or {}
            # A viewset's route maps methods to actions; a view answers the methods it defines.
            actions: dict[str, str] = getattr(callback, "actions", None) or {}
            methods = list(actions) or [m for m in getattr(cls, "http_method_names", ()) if hasattr(cls, m)]
            # Name the actions only where the route sets a limit attribute of its own (an @action's).
            own = {"ratelimit_category", "ratelimit_cost"} & set(initkwargs)
            yield ThrottledView(
                cls,
                tuple(methods),
                tuple(sorted(initkwargs.items())),
                tuple(sorted(set(actions.values()))) if own else (),
            )
