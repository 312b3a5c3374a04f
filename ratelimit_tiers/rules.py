"""Limit rules as the limiter applies them: one rule, the rules a request meets, and their RATE text.

Pure, like :mod:`~ratelimit_tiers.algorithms`: no Django, and the clock is
passed in. A rule is a count over a period, either a sliding window of N
seconds (``60/min``, ``100/10s``, ``1000/24h``) or a calendar quota (``/day``,
``/week``, ``/month``), for one endpoint category or for all of them, counted
per API key or per account.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

#: Scopes: each key counts apart (the default), or all keys of an account share one count.
KEY = "key"
ACCOUNT = "account"
SCOPES = (KEY, ACCOUNT)

#: Calendar quotas: they reset at the start of each period, in ``RATELIMIT_TIERS_QUOTA_TIMEZONE``.
DAY = "day"
WEEK = "week"
MONTH = "month"
CALENDARS = (DAY, WEEK, MONTH)

#: The category of a rule that applies to every category.
ALL = ""

#: What a category name may be: it appears in store keys and in headers.
CATEGORY_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,49}$")

_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True)
class Rule:
    """``count`` requests per period: a sliding ``window`` of seconds, or a ``calendar`` quota.

    ``until`` (Unix time) ends an account's override; ``origin`` says where the
    rule comes from (``"tier"`` or ``"account"``), for people.
    """

    count: int
    window: int = 0
    calendar: str = ""
    category: str = ALL
    scope: str = KEY
    algorithm: str = ""
    until: float | None = None
    origin: str = ""

    @property
    def period(self) -> str:
        """``"60s"`` for a sliding window, the calendar unit for a quota: unique per category and scope."""
        return self.calendar or f"{self.window}s"

    @property
    def identity(self) -> tuple[str, str, str]:
        """Two rules with the same identity are one: an account's replaces its tier's."""
        return self.category, self.period, self.scope

    @property
    def name(self) -> str:
        """The rule's name in headers and 429 bodies, e.g. ``read-60s`` or ``all-day-account``."""
        name = f"{self.category or 'all'}-{self.period}"
        return f"{name}-{ACCOUNT}" if self.scope == ACCOUNT else name

    @property
    def rate(self) -> str:
        """The rule as RATE text: ``60/min``, ``100/10s``, ``1000/day``."""
        return f"{self.count}/{format_period(self.window, self.calendar)}"


def parse_limit(text: str) -> tuple[int, int, str]:
    """Parse RATE text into ``(count, window seconds, calendar)``, one of the last two empty.

    ``10/s``, ``60/min``, ``5000/h``, ``100/10s``, ``1000/24h`` are sliding
    windows; ``1000/day``, ``/week`` and ``/month`` are calendar quotas. Raises
    ``ValueError`` for anything else, or a count below 1.
    """
    match = _RATE_RE.match(text.lower())
    if match is not None:
        count, multiplier, unit = int(match.group(1)), match.group(2), match.group(3)
        if count >= 1 and unit in CALENDARS and not multiplier:
            return count, 0, unit
        if count >= 1 and unit in _SECONDS and int(multiplier or 1) > 0:
            return count, int(multiplier or 1) * _SECONDS[unit], ""
    raise ValueError(
        f"invalid rate {text!r}: expected COUNT/PERIOD, e.g. 10/s, 60/min, 100/10s, 1000/24h, "
        "1000/day, 5000/week or 100000/month (COUNT at least 1)"
    )


def format_period(window: int, calendar: str = "") -> str:
    if calendar:
        return calendar
    for seconds, unit in ((3600, "h"), (60, "min"), (1, "s")):
        if window % seconds == 0:
            count = window // seconds
            return unit if count == 1 else f"{count}{unit}"
    raise AssertionError  # pragma: no cover - every window divides by 1.


def effective(tier_rules: Iterable[Rule], account_rules: Iterable[Rule], now: float) -> tuple[Rule, ...]:
    """An account's rules: its tier's, each replaced by the account's rule of the same identity,
    plus the account's others; an account rule whose ``until`` has passed does not apply."""
    rules = {rule.identity: rule for rule in tier_rules}
    for rule in account_rules:
        if rule.until is None or now < rule.until:
            rules[rule.identity] = rule
    return tuple(sorted(rules.values(), key=lambda r: (r.category, r.scope, r.calendar, r.window)))


def applicable(rules: Iterable[Rule], category: str) -> tuple[Rule, ...]:
    """The rules a request of ``category`` meets: the category's own, then every all-categories
    rule for a period and scope the category has no rule of its own for. Each counts apart per
    category (as a tier's single limit always did), per key or per account."""
    rules = tuple(rules)
    own = [rule for rule in rules if rule.category == category]
    taken = {(rule.period, rule.scope) for rule in own}
    defaults = [r for r in rules if r.category == ALL and (r.period, r.scope) not in taken]
    return (*own, *defaults)


def period_bounds(calendar: str, now: float, zone: tzinfo) -> tuple[float, float]:
    """The calendar period (Unix seconds ``[start, end)``) that contains ``now``, in ``zone``.

    Days start at midnight, weeks on Monday, months on the 1st; a day across a
    daylight-saving change lasts 23 or 25 hours.
    """
    today = datetime.fromtimestamp(now, zone).date()
    if calendar == DAY:
        first, last = today, today + timedelta(days=1)
    elif calendar == WEEK:
        first = today - timedelta(days=today.weekday())
        last = first + timedelta(days=7)
    elif calendar == MONTH:
        first = today.replace(day=1)
        last = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    else:
        raise ValueError(f"unknown calendar period {calendar!r}")
    return _midnight(first, zone), _midnight(last, zone)


def _midnight(day: date, zone: tzinfo) -> float:
    return datetime.combine(day, time(0), tzinfo=zone).timestamp()
