"""The usage ledger's counts as the storages read them: per account, key, category and UTC hour.

Pure data and arithmetic, no Django: the storages write and read the ledger
(``storage/scripts/ledger.lua``, ``storage/cache_ledger.py``), ``usage`` and
``rollup`` turn what they read into rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from ratelimit_tiers.names import LEDGER_ADMITTED, LEDGER_LAST_REFUSED, LEDGER_REFUSED

#: Seconds in an hour: the ledger's unit of time. Hours are numbered from the Unix epoch.
HOUR = 3600


def hour_of(ms: float) -> int:
    """The number of the UTC hour that contains Unix time ``ms`` (milliseconds)."""
    return int(ms // (HOUR * 1000))


class LedgerScope(NamedTuple):
    """What may be in the ledger of an account: its keys' prefixes, the categories and rule names.

    A Redis hash lists its own fields, so :class:`~ratelimit_tiers.storage.redis.RedisStorage`
    needs only ``account``; a cache cannot list keys, so ``CacheStorage`` asks for
    every combination of the others.
    """

    account: int
    prefixes: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()


class Slot(NamedTuple):
    """Where counts are kept: a UTC hour, an account, a key prefix, a category."""

    hour: int
    account: int
    prefix: str
    category: str


@dataclass
class Counts:
    """Requests of one :class:`Slot`: admitted, refused (and by which rule), and the last refusal (ms)."""

    admitted: int = 0
    refused: int = 0
    refused_by: dict[str, int] = field(default_factory=dict)
    last_refused: int | None = None

    def add(self, other: Counts) -> None:
        self.admitted += other.admitted
        self.refused += other.refused
        for rule, count in other.refused_by.items():
            self.refused_by[rule] = self.refused_by.get(rule, 0) + count
        if other.last_refused is not None:
            self.last_refused = max(self.last_refused or 0, other.last_refused)

    def __bool__(self) -> bool:
        return bool(self.admitted or self.refused)


def parse_hash(hour: int, account: int, fields: Mapping[bytes, bytes]) -> dict[Slot, Counts]:
    """The counts of one ledger hash (see ``names``): ``<prefix>:<category>:<what>`` fields."""
    found: dict[Slot, Counts] = {}
    for raw, value in fields.items():
        prefix, category, what = raw.decode().split(":", 2)
        counts = found.setdefault(Slot(hour, account, prefix, category), Counts())
        if what == LEDGER_ADMITTED:
            counts.admitted += int(value)
        elif what == LEDGER_LAST_REFUSED:
            counts.last_refused = int(value)
        elif what.startswith(LEDGER_REFUSED + ":"):
            refused = int(value)
            if refused:
                counts.refused += refused
                counts.refused_by[what[len(LEDGER_REFUSED) + 1 :]] = refused
    return {slot: counts for slot, counts in found.items() if counts}


class Refusals(NamedTuple):
    """Refusals a process served itself (``local_refusals``) in one hour by one rule, not yet in the store."""

    rule: str
    n: int
    last: int  # ms, on the store's clock as the process reckons it


def carried_words(refusals: Iterable[Refusals]) -> str:
    """Refusals as ``ledger.lua`` reads them after a spec: ``<rule> <count> <last ms>`` each."""
    return " ".join(f"{r.rule} {r.n} {r.last}" for r in refusals)


def first_kept(now: float, days: int, margin: float = 60) -> int:
    """The oldest hour whose counts the store still keeps ``margin`` seconds from ``now`` (Unix s)."""
    return int((now + margin - days * 86400) // HOUR)


def hours_between(since: float, until: float) -> range:
    """The hours that overlap ``[since, until)`` (Unix s)."""
    return range(int(since // HOUR), -int(-until // HOUR))
