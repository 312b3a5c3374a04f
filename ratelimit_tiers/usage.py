"""Reading the usage ledger: requests per key, category and UTC hour (the store) or day (the database too).

The store counts each check in the ledger (``storage/scripts/ledger.lua``)
for ``RATELIMIT_TIERS_LEDGER_DAYS``; ``manage.py ratelimit_tiers_rollup``
adds finished hours to :class:`~ratelimit_tiers.models.DailyUsage`, kept as
long as the operator likes. :func:`daily` reads both, so a day is whole
before it is rolled up. Both readers raise
:class:`~ratelimit_tiers.exceptions.StorageUnavailable` when the store is down.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta, timezone
from typing import NamedTuple

from django.db.models import Q

from ratelimit_tiers import categories
from ratelimit_tiers.conf import conf
from ratelimit_tiers.ledger import HOUR, Counts, LedgerScope, Slot, first_kept, hours_between
from ratelimit_tiers.models import Account, APIKey, DailyUsage, LimitRule, RolledHour
from ratelimit_tiers.storage import get_storage

#: The CSV's columns (one row per key, category and UTC day).
CSV_HEADER = ["date", "account", "key_prefix", "category", "admitted", "refused"]
#: What spreadsheets read as the start of a formula in a cell (OWASP's list for CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: Reads of :func:`daily` before it gives up on a rollup committing meanwhile (then it is consistent
#: with what it read last).
DAILY_ATTEMPTS = 3


class Usage(NamedTuple):
    start: datetime  # aware UTC: the hour's or the day's start
    account_id: int | None  # None only for rolled-up rows of a deleted account
    account_name: str
    prefix: str  # the key's prefix
    category: str
    admitted: int
    refused: int
    refused_by: dict[str, int]  # refusing rule name -> refusals
    last_refused: datetime | None


def hour_start(hour: int) -> datetime:
    """The start of a ledger hour (its number since the epoch), aware UTC."""
    return datetime.fromtimestamp(hour * HOUR, tz=timezone.utc)


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


class Accounts(NamedTuple):
    """What the ledger of some accounts may hold (:class:`LedgerScope` each) and their names."""

    scopes: list[LedgerScope]
    names: dict[int, str]


def accounts_of(ids: Iterable[int] | None = None) -> Accounts:
    """The accounts ``ids`` (every account with ``None``), read from the database.

    A cache cannot list its keys: a scope names each key of the account
    (revoked ones too), each category in use and each rule name a tier or
    account has. The Redis storages read each account's hashes whole.
    """
    accounts = Account.objects.order_by("pk")
    if ids is not None:
        accounts = accounts.filter(pk__in=list(ids))
    names = dict(accounts.values_list("pk", "name"))
    prefixes: dict[int, list[str]] = {}
    for account, prefix in APIKey.objects.filter(account__in=list(names)).values_list("account", "prefix"):
        prefixes.setdefault(account, []).append(prefix)
    rules = [row.as_rule() for row in LimitRule.objects.all()]
    in_use, rule_names = tuple(categories.in_use(rules)), tuple(sorted({rule.name for rule in rules}))
    scopes = [LedgerScope(pk, tuple(prefixes.get(pk, ())), in_use, rule_names) for pk in names]
    return Accounts(scopes, names)


def kept_hours(hours: Iterable[int], now: float | None = None) -> list[int]:
    """Those of ``hours`` the store's ledger may still hold: not expired, not in the future."""
    now = time.time() if now is None else now
    days = conf.LEDGER_DAYS
    if not days:
        return []
    # An hour ahead of the app server's clock: the store's may be ahead of it.
    first, last = first_kept(now, days), int(now // HOUR) + 1
    return [hour for hour in hours if first <= hour <= last]


def hourly(since: datetime, until: datetime, accounts: Iterable[int] | None = None) -> list[Usage]:
    """Requests per key, category and UTC hour in ``[since, until)``, from the store's ledger.

    Only the hours the store still keeps (``RATELIMIT_TIERS_LEDGER_DAYS``) and
    only slots with a request; sorted by hour, account name, key, category.
    """
    hours = kept_hours(hours_between(since.timestamp(), until.timestamp()))
    found = read(accounts_of(accounts), hours)
    return sorted(
        (
            _usage(hour_start(slot.hour), slot.account, name, slot.prefix, slot.category, counts)
            for (slot, name), counts in found.items()
        ),
        key=_order,
    )


def read(accounts: Accounts, hours: list[int]) -> dict[tuple[Slot, str], Counts]:
    """The store's counts of ``accounts`` in ``hours``, with each account's name."""
    if not hours or not accounts.scopes:
        return {}
    counts = get_storage().read_ledger(accounts.scopes, hours)
    return {(slot, accounts.names[slot.account]): found for slot, found in counts.items()}


def daily(since: date, until: date, accounts: Iterable[int] | None = None) -> list[Usage]:
    """Requests per key, category and UTC day in ``[since, until]``: rolled-up rows, the store's other hours.

    Hours not rolled up yet (:class:`RolledHour`) are read from the store, so
    today is included; a rollup that commits while this reads is seen whole or
    not at all (it reads again). Sorted by day, account name, key, category.
    """
    ids = None if accounts is None else list(accounts)
    start, end = day_start(since), day_start(until) + timedelta(days=1)
    hours = kept_hours(hours_between(start.timestamp(), end.timestamp()))
    scope = accounts_of(ids) if hours else Accounts([], {})
    for _attempt in range(DAILY_ATTEMPTS):
        rolled = rolled_hours(start, end)
        found = read(scope, [hour for hour in hours if hour not in rolled])
        rows = DailyUsage.objects.filter(day__gte=since, day__lte=until)
        if ids is not None:
            rows = rows.filter(account__in=ids)
        rows_read = list(rows)
        if rolled_hours(start, end) == rolled:
            break
    by_day: dict[tuple[date, str, str], Usage] = {}
    for row in rows_read:
        by_day[(row.day, row.key_prefix, row.category)] = Usage(
            day_start(row.day),
            row.account_id,
            row.account_name,
            row.key_prefix,
            row.category,
            row.admitted,
            row.refused,
            dict(row.refused_by),
            row.last_refused,
        )
    for (slot, name), counts in found.items():
        day = hour_start(slot.hour).date()
        usage = by_day.get((day, slot.prefix, slot.category))
        if usage is not None:
            counts.add(_counts(usage))
        by_day[(day, slot.prefix, slot.category)] = _usage(
            day_start(day), slot.account, name, slot.prefix, slot.category, counts
        )
    return sorted(by_day.values(), key=_order)


def csv_rows(since: date, until: date, accounts: Iterable[int] | None = None) -> Iterator[list[str]]:
    """The billing CSV of ``[since, until]``: :data:`CSV_HEADER`, then one row per :func:`daily` usage.

    Names operators typed are written as :func:`spreadsheet_text`.
    """
    yield list(CSV_HEADER)
    for usage in daily(since, until, accounts):
        yield [
            usage.start.date().isoformat(),
            spreadsheet_text(usage.account_name),
            usage.prefix,
            spreadsheet_text(usage.category),
            str(usage.admitted),
            str(usage.refused),
        ]


def spreadsheet_text(text: str) -> str:
    """``text`` as a CSV cell that spreadsheets show and never run as a formula: quoted if it starts one."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def rolled_hours(start: datetime, end: datetime) -> set[int]:
    """The hours in ``[start, end)`` already rolled up into :class:`DailyUsage`."""
    rows = RolledHour.objects.filter(Q(hour__gte=start) & Q(hour__lt=end)).values_list("hour", flat=True)
    return {int(hour.timestamp() // HOUR) for hour in rows}


def _usage(start: datetime, account: int, name: str, prefix: str, category: str, counts: Counts) -> Usage:
    return Usage(
        start,
        account,
        name,
        prefix,
        category,
        counts.admitted,
        counts.refused,
        dict(counts.refused_by),
        from_ms(counts.last_refused),
    )


def _counts(usage: Usage) -> Counts:
    last = None if usage.last_refused is None else round(usage.last_refused.timestamp() * 1000)
    return Counts(usage.admitted, usage.refused, dict(usage.refused_by), last)


def _order(usage: Usage) -> tuple[datetime, str, str, str]:
    return (usage.start, usage.account_name, usage.prefix, usage.category)
