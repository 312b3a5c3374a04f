"""Peak share of quota used: how close an account's busiest hour came to what its rules admit in an hour.

For each UTC hour of the ledger, each category and each rule that category
meets (:func:`ratelimit_tiers.rules.applicable`, with the account's effective
rules now), the share is the admitted requests (the busiest key's for a rule
counted per key, all keys' together for a rule counted per account) divided by
the rule's hourly capacity: the most it admits in one hour, ``count * 3600 /
window`` for a sliding window of up to an hour, ``count`` for a longer window
or a calendar quota. The peak share is the highest of these.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from ratelimit_tiers.rules import ACCOUNT, Rule, applicable

HOUR = 3600


class HourRow(Protocol):
    """One key's requests in one category and hour (``usage.Usage`` from ``usage.hourly``)."""

    @property
    def start(self) -> datetime: ...
    @property
    def prefix(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def admitted(self) -> int: ...


def hourly_capacity(rule: Rule) -> float:
    """The most ``rule`` admits in one hour."""
    if rule.calendar or rule.window > HOUR:
        return float(rule.count)
    return rule.count * HOUR / rule.window


def peak_share(rows: Iterable[HourRow], rules: Iterable[Rule]) -> float | None:
    """The highest share (1.0 = 100%) of an hourly capacity used in one hour, by one account's
    ``rows``; None when no row's category meets a rule."""
    rules = tuple(rules)
    per_key: dict[tuple[datetime, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        per_key[row.start, row.category][row.prefix] += row.admitted
    peak: float | None = None
    for (_hour, category), keys in per_key.items():
        for rule in applicable(rules, category):
            admitted = sum(keys.values()) if rule.scope == ACCOUNT else max(keys.values())
            share = admitted / hourly_capacity(rule)
            peak = share if peak is None else max(peak, share)
    return peak
