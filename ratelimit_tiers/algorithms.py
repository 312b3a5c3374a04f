"""Pure rate-limit math: no Django, no I/O, and the clock is always passed in.

The Lua scripts in ``storage/scripts/`` implement the same rules on the Redis
server; these functions are their reference, which the property tests check,
and which a differential test (``tests/test_scripts.py``) runs the scripts
against on random schedules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

EXACT = "exact"
COUNTER = "counter"
ALGORITHMS = (EXACT, COUNTER)
#: The largest limit (requests per window) the exact sliding log keeps a ring of stamps for:
#: 6 bytes a stamp, so at most 60 KB a key, which a limit change copies in well under a
#: millisecond. Larger limits use the counter (``storage/scripts/hit.lua`` has the same number).
EXACT_MAX_LIMIT = 10_000

READ = "read"
WRITE = "write"
DELETE = "delete"
AUTH = "auth"
CATEGORIES = (READ, WRITE, DELETE, AUTH)

METHOD_CATEGORIES = {
    "GET": READ,
    "HEAD": READ,
    "OPTIONS": READ,
    "POST": WRITE,
    "PUT": WRITE,
    "PATCH": WRITE,
    "DELETE": DELETE,
}

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+?)s?\s*$")


def algorithm_for(algorithm: str, limit: int) -> str:
    """The algorithm a check of ``limit`` requests per window runs: ``algorithm``, except
    :data:`COUNTER` above :data:`EXACT_MAX_LIMIT`."""
    return COUNTER if limit > EXACT_MAX_LIMIT else algorithm


@dataclass(frozen=True)
class Rate:
    """``limit`` requests in any ``window`` seconds."""

    limit: int
    window: int

    def __str__(self) -> str:
        return f"{self.limit}/{self.window}s"


def parse_rate(text: str) -> Rate:
    """Parse ``"60/min"``, ``"100/10s"`` or ``"5000/hour"`` into a :class:`Rate`.

    Raises ``ValueError`` for anything else.
    """
    match = _RATE_RE.match(text.lower())
    if not match or match.group(3) not in _UNITS:
        raise ValueError(f"invalid rate {text!r}; expected e.g. '60/min' or '100/10s'")
    count, multiplier, unit = match.groups()
    window = int(multiplier or 1) * _UNITS[unit]
    if window <= 0:
        raise ValueError(f"invalid rate {text!r}; the window must be positive")
    return Rate(int(count), window)


class Decision(NamedTuple):
    """The outcome of one check, consistent with the step that took it.

    ``reset_after`` is the number of seconds until ``remaining`` next grows
    (on a refusal: until a request would be admitted), measured from ``now``,
    the store's clock in Unix seconds. Immutable; a named tuple, not a frozen
    dataclass, because one is built on every check and a frozen dataclass's
    constructor costs three times as much.
    """

    allowed: bool
    limit: int
    window: int
    remaining: int
    reset_after: float
    now: float
    #: The name of the rule that decided (``rules.Rule.name``); ``""`` for an ad-hoc bucket.
    policy: str = ""
    #: Whether that rule is a calendar quota (its 429 says ``quota_exceeded``).
    quota: bool = False

    @property
    def reset_at(self) -> int:
        """Unix time (integer seconds) for ``X-RateLimit-Reset``."""
        return math.ceil(self.now + self.reset_after)

    @property
    def retry_after(self) -> int:
        """Whole seconds for ``Retry-After``: waiting that long is enough, one second less is not."""
        return max(1, math.ceil(self.reset_after))


def headline(decisions: Sequence[Decision]) -> Decision:
    """The decision of several rules that ``X-RateLimit-*`` describe.

    On a refusal, the refusing rule with the longest wait (``Retry-After``
    agrees with it). Otherwise the rule with the fewest requests remaining;
    on a tie, the one whose reset comes last, then the one with the smallest
    limit.
    """
    # One pass without building keys: this runs on every check of a key with several rules.
    best = decisions[0]
    for decision in decisions[1:]:
        if decision.allowed != best.allowed:
            if not decision.allowed:
                best = decision
        elif not best.allowed:
            if decision.reset_after > best.reset_after:
                best = decision
        elif (decision.remaining, best.reset_after, decision.limit) < (
            best.remaining,
            decision.reset_after,
            best.limit,
        ):
            best = decision
    return best


def exact_decide(
    stamps: Sequence[int],
    now: int,
    rate: Rate,
    *,
    charge: bool = True,
    stamp: int | None = None,
    cost: int = 1,
) -> tuple[Decision, tuple[int, ...]]:
    """Sliding log over the last ``limit`` admitted timestamps (oldest first).

    Times are integer milliseconds, as in the Lua script
    (``storage/scripts/exact.lua``), so no rounding can admit early. A request
    of ``cost`` is admitted iff at most ``limit - cost`` requests were admitted
    in the last ``window`` seconds; it keeps ``cost`` copies of ``stamp``, by
    default ``now``: the script reads its clock rounded down and stamps it
    rounded up (``now`` or ``now + 1``), so a stamp can only look younger.
    With ``charge`` false the decision is only a look: nothing is kept.
    ``reset_after`` is until ``remaining`` next grows (the oldest live stamp
    leaves the window), 0 when none is live; on a refusal, until the request
    would be admitted. Returns the decision and the stamps to keep.
    """
    limit, window = rate.limit, rate.window * 1000
    if limit <= 0 or cost > limit:
        return _decision(False, rate, 0, window, now), tuple(stamps)
    kept = tuple(stamps[-limit:])
    live = [t for t in kept if now - t < window]
    if len(live) + cost > limit:
        # Until enough of the oldest live stamps leave the window to make room for `cost`.
        return _decision(
            False, rate, limit - len(live), live[len(live) + cost - limit - 1] + window - now, now
        ), kept
    if charge:
        kept = (*kept, *[now if stamp is None else stamp] * cost)[-limit:]
        live = [t for t in kept if now - t < window]
    reset = live[0] + window - now if live else 0
    return _decision(True, rate, limit - len(live), reset, now), kept


def counter_decide(
    previous: int, current: int, now: int, rate: Rate, *, charge: bool = True, cost: int = 1
) -> Decision:
    """Sliding-window counter: the previous fixed window's count, weighted by
    how much of it still overlaps the sliding window, plus the current one's.

    ``current`` excludes this request; ``now`` is in milliseconds. A request
    of ``cost`` is admitted iff the weighted count plus ``cost`` fits in
    ``limit``. Memory is two integers, but in any span of ``window`` seconds
    up to ``2 * limit`` requests can be admitted (each of the two fixed
    windows it overlaps admits at most ``limit``). With ``charge`` false the
    decision is only a look: ``remaining`` and ``reset_after`` leave this
    request uncounted.
    """
    limit, window = rate.limit, rate.window * 1000
    elapsed = now % window
    weighted = previous * (window - elapsed) / window + current
    if 0 < cost <= limit and weighted + cost <= limit:
        counted = current + cost if charge else current
        remaining = math.floor(limit - weighted - cost) if charge else math.floor(limit - weighted)
        reset = counter_wait(previous, counted, elapsed, rate, remaining + 1) if remaining < limit else 0
        return _decision(True, rate, remaining, reset, now)
    remaining = max(0, min(limit, math.floor(limit - weighted)))
    if cost > limit:
        return _decision(False, rate, remaining, window, now)
    return _decision(False, rate, remaining, counter_wait(previous, current, elapsed, rate, cost), now)


def counter_wait(previous: int, current: int, elapsed: int, rate: Rate, room: int = 1) -> int:
    """Milliseconds until the counter has ``room`` for that many requests, if none come meanwhile.

    With the default ``room`` of 1: until :func:`counter_decide` admits one
    request. With ``room`` one more than ``remaining``: until ``remaining``
    grows. ``room`` is at most ``limit``.
    """
    limit, window = rate.limit, rate.window * 1000
    if limit <= 0:
        return window
    # One division of whole numbers each, rounded up: the first millisecond
    # that has the room, with no float error to make it a millisecond late.
    if current + room <= limit:
        # Still in this window, once the previous window has decayed enough.
        decayed = math.ceil(window * (previous - limit + room + current) / previous) if previous else 0
        return max(1, decayed - elapsed)
    # In the next window, where this window's count becomes the decaying one.
    return window - elapsed + math.ceil(window * (current - limit + room) / current)


def quota_decide(
    used: int, now: int, start: int, end: int, limit: int, *, charge: bool = True, cost: int = 1
) -> Decision:
    """A calendar quota: at most ``limit`` in the period ``[start, end)`` (ms), ``used`` so far.

    A request of ``cost`` is admitted iff ``used + cost`` fits. Nothing comes
    back before the period ends, so ``reset_after`` is until ``end`` (0 while
    nothing is used, as for the windows).
    """
    window = max(1, (end - start) // 1000)
    if 0 < cost <= limit and used + cost <= limit:
        counted = used + cost if charge else used
        reset = max(end - now, 0) / 1000 if counted else 0
        return Decision(True, limit, window, limit - counted, reset, now / 1000, quota=True)
    # At least a millisecond: the bounds come from the app server's clock, which may lag the store's.
    return Decision(
        False, limit, window, max(0, limit - used), max(end - now, 1) / 1000, now / 1000, quota=True
    )


def _decision(allowed: bool, rate: Rate, remaining: int, reset_ms: int, now_ms: int) -> Decision:
    return Decision(allowed, rate.limit, rate.window, remaining, reset_ms / 1000, now_ms / 1000)
