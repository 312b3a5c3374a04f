"""Rolling finished hours of the store's usage ledger up into :class:`DailyUsage`, each hour once, ever.

An hour is rolled up in one database transaction that inserts its
:class:`RolledHour` row and adds its counts: of two runs at once (cron on
several hosts), the second to insert that row fails on its unique constraint
and rolls back, so nothing is counted twice; a failure anywhere (the store
read first, or the database) leaves the hour unrolled, to be retried by the
next run, so nothing is lost while the store keeps the hour
(``RATELIMIT_TIERS_LEDGER_DAYS``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import date
from typing import NamedTuple

from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from ratelimit_tiers.conf import conf
from ratelimit_tiers.ledger import HOUR, Counts, Slot, first_kept
from ratelimit_tiers.models import APIKey, DailyUsage, RolledHour
from ratelimit_tiers.usage import Accounts, accounts_of, from_ms, hour_start, read

#: Seconds after an hour ends before it is rolled up: app servers' and the store's clocks may differ,
#: and refusals served from a process's memory reach the store within a few seconds.
GRACE_SECONDS = 300
#: How far back, past the store's retention, hours that were never rolled up are reported.
LOST_LOOKBACK_HOURS = 7 * 24


class Rollup(NamedTuple):
    """What a run did: hours it rolled up, hours another run rolled up first, hours lost before it ran."""

    rolled: list[int]
    taken: list[int]
    lost: list[int]


def pending(now: float, grace: float = GRACE_SECONDS) -> list[int]:
    """The finished hours the store still keeps that no run rolled up yet, oldest first."""
    days = conf.LEDGER_DAYS
    if not days:
        return []
    first, last = first_kept(now, days), int((now - grace) // HOUR) - 1
    if last < first:
        return []
    rolled = set(_hours(RolledHour.objects.filter(hour__gte=hour_start(first))))
    return [hour for hour in range(first, last + 1) if hour not in rolled]


def lost(now: float) -> list[int]:
    """Hours the store no longer keeps that were never rolled up (since the first run, within a week)."""
    days = conf.LEDGER_DAYS
    if not days:
        return []
    horizon = first_kept(now, days)
    start = RolledHour.objects.order_by("hour").values_list("hour", flat=True).first()
    if start is None:
        return []
    first = max(int(start.timestamp() // HOUR), horizon - LOST_LOOKBACK_HOURS)
    rolled = set(_hours(RolledHour.objects.filter(hour__gte=hour_start(first), hour__lt=hour_start(horizon))))
    return [hour for hour in range(first, horizon) if hour not in rolled]


def roll_up(now: float | None = None, on_hour: Callable[[int, bool], None] | None = None) -> Rollup:
    """Roll up every pending hour, oldest first; stop at the first failure, raising it.

    ``on_hour(hour, rolled)`` is called after each. Raises
    :class:`~ratelimit_tiers.exceptions.StorageUnavailable` (the store) or a
    ``DatabaseError``: the hours before were rolled up, that one and the
    later ones were not.
    """
    now = time.time() if now is None else now
    done = Rollup([], [], lost(now))
    hours = pending(now)
    if not hours:
        return done
    accounts = accounts_of()
    for hour in hours:
        rolled = roll_hour(hour, accounts)
        (done.rolled if rolled else done.taken).append(hour)
        if on_hour is not None:
            on_hour(hour, rolled)
    return done


def roll_hour(hour: int, accounts: Accounts) -> bool:
    """Add one hour's counts to :class:`DailyUsage`: ``False`` if another run rolled it up first."""
    found = read(accounts, [hour])  # Before the transaction: the store failing writes nothing.
    day = hour_start(hour).date()
    keys = dict(
        APIKey.objects.filter(prefix__in={slot.prefix for slot, _name in found}).values_list("prefix", "pk")
    )
    try:
        with transaction.atomic():
            RolledHour.objects.create(hour=hour_start(hour))
            # In one order in every run: two runs of the same day's hours wait, never deadlock.
            for (slot, name), counts in sorted(found.items(), key=_row_order):
                _add(day, slot.account, name, keys.get(slot.prefix), slot.prefix, slot.category, counts)
    except IntegrityError:
        if RolledHour.objects.filter(hour=hour_start(hour)).exists():
            return False  # Another run rolled it up: its transaction has the counts.
        raise
    return True


def _row_order(item: tuple[tuple[Slot, str], Counts]) -> tuple[str, str]:
    """A :class:`DailyUsage` row's place in the order every run locks rows in: (prefix, category)."""
    slot = item[0][0]
    return slot.prefix, slot.category


def _add(
    day: date, account: int, name: str, key: int | None, prefix: str, category: str, counts: Counts
) -> None:
    row, _created = DailyUsage.objects.select_for_update().get_or_create(
        day=day,
        key_prefix=prefix,
        category=category,
        defaults={"account_id": account, "account_name": name, "key_id": key},
    )
    row.admitted += counts.admitted
    row.refused += counts.refused
    by = dict(row.refused_by)
    for rule, n in counts.refused_by.items():
        by[rule] = by.get(rule, 0) + n
    row.refused_by = by
    last = from_ms(counts.last_refused)
    if last is not None and (row.last_refused is None or last > row.last_refused):
        row.last_refused = last
    row.save()


def _hours(rows: QuerySet[RolledHour]) -> Iterator[int]:
    return (int(hour.timestamp() // HOUR) for hour in rows.values_list("hour", flat=True))
