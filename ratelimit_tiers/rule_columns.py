"""How operators see a limit rule: the same columns in the admin and in ``ratelimit_tiers_limits show``."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ratelimit_tiers.algorithms import algorithm_for
from ratelimit_tiers.conf import conf
from ratelimit_tiers.rules import Rule

#: Column titles, in the order of :func:`columns`.
COLUMNS = (
    _("rule"),
    _("rate"),
    _("category"),
    _("counted per"),
    _("algorithm"),
    _("origin"),
    _("until"),
)
#: What a column shows when the rule has nothing there (no end).
NONE = "-"


def algorithm_in_use(rule: Rule) -> str:
    """``"quota"`` for a calendar quota, else the algorithm the store runs for it: its own or
    ``RATELIMIT_TIERS_ALGORITHM``, and the counter above ``EXACT_MAX_LIMIT``."""
    if rule.calendar:
        return "quota"
    return algorithm_for(rule.algorithm or conf.ALGORITHM, rule.count)


def until_text(until: float | None) -> str:
    """An override's end in the current time zone, ISO 8601 to the second; ``-`` when it does not end."""
    if until is None:
        return NONE
    return datetime.fromtimestamp(until, tz=timezone.get_current_timezone()).isoformat(timespec="seconds")


def columns(rule: Rule) -> tuple[str, ...]:
    """The rule's cells under :data:`COLUMNS`, e.g. ``all-60s 60/min all key exact tier -``."""
    return (
        rule.name,
        rule.rate,
        rule.category or "all",
        rule.scope,
        algorithm_in_use(rule),
        rule.origin or NONE,
        until_text(rule.until),
    )
