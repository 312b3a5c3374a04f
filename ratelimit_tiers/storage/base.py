"""The storage contract: what the limiter asks a store (:class:`Storage`) and its answer (:data:`Outcome`)."""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias
from zoneinfo import ZoneInfo

from ratelimit_tiers.algorithms import Decision, Rate, headline
from ratelimit_tiers.conf import conf
from ratelimit_tiers.errors import wrap_errors as wrap_errors  # Where the storages find it.
from ratelimit_tiers.ledger import Counts, LedgerScope, Refusals, Slot
from ratelimit_tiers.names import ACTIVE
from ratelimit_tiers.names import generation_key as generation_key  # Where redis.py finds it.
from ratelimit_tiers.refusal_tally import TallyKey
from ratelimit_tiers.rules import CALENDARS, period_bounds


class Verdict(NamedTuple):
    """The store's answer on an active key, complete: a decision per rule, the tier and its shadow flag.

    ``shadow`` is the tier's own flag, as stored with the key's policy
    (``RATELIMIT_TIERS_SHADOW`` is the throttle's to add). A request is
    admitted only if every rule admitted it; with no rule at all, it is. A
    named tuple, as :class:`~ratelimit_tiers.algorithms.Decision`: one is
    built on every check.
    """

    decisions: tuple[Decision, ...]
    tier: str = ""
    shadow: bool = False

    @property
    def state(self) -> str:
        """A decision is only ever taken on an active key."""
        return ACTIVE

    @property
    def allowed(self) -> bool:
        return all(decision.allowed for decision in self.decisions)

    @property
    def decision(self) -> Decision | None:
        """What the headers describe (``algorithms.headline``); ``None`` when no rule applies."""
        decisions = self.decisions
        if len(decisions) == 1:  # The common case: no choice to make.
            return decisions[0]
        return headline(decisions) if decisions else None


@dataclass(frozen=True)
class Unusable:
    """The store's answer on a key that cannot be used: its state (a ``names.KeyState``), no decision."""

    state: str


#: What a check answers: a :class:`Verdict` (admitted or refused) or an :class:`Unusable` key.
Outcome: TypeAlias = Verdict | Unusable


#: Seconds a policy generation outlives the eviction that set it: far longer
#: than loading a policy can take, and than POLICY_TIMEOUT.
GENERATION_TIMEOUT = 86_400
#: Loads of one check's policy before giving up on a key whose policy keeps changing.
INSTALL_ATTEMPTS = 4


def new_generation() -> str:
    """A token that no earlier eviction used: a load tagged with an older one is stale."""
    return secrets.token_hex(8)


def stamp_ms(decision: Decision) -> int:
    """The store's clock when ``decision`` was taken, in integer milliseconds as the store wrote it."""
    return round(decision.now * 1000)


class Calendar:
    """The current day, week and month in ``RATELIMIT_TIERS_QUOTA_TIMEZONE``, for calendar quotas.

    :meth:`bounds` gives each period's start and end in integer milliseconds,
    computed again only once the day ends (or the setting changes): what each
    check passes to the store. Measured on the app server's clock (``clock``).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._bounds: tuple[int, ...] = ()
        self._day = (0.0, 0.0)
        self._zone = ""

    def bounds(self) -> tuple[int, ...]:
        now, zone = self.clock(), conf.QUOTA_TIMEZONE
        # Again on a new day, a new zone, or a clock set back (NTP, a test's).
        if not self._day[0] <= now < self._day[1] or zone != self._zone:
            periods = [period_bounds(calendar, now, ZoneInfo(zone)) for calendar in CALENDARS]
            self._bounds = tuple(round(edge * 1000) for period in periods for edge in period)
            self._day, self._zone = periods[0], zone
        return self._bounds

    def period(self, calendar: str) -> tuple[int, int]:
        """``(start, end)`` ms of the current ``"day"``, ``"week"`` or ``"month"``."""
        at = 2 * CALENDARS.index(calendar)
        bounds = self.bounds()
        return bounds[at], bounds[at + 1]


class Storage(ABC):
    """Where counters and resolved policies live.

    Subclasses make :meth:`hit` atomic across processes: two concurrent hits
    on a key with one slot left never both get admitted. A refused hit does
    not consume quota in any rule. Every method raises
    :class:`StorageUnavailable` when the backend fails, and :meth:`hit`
    raises :class:`~ratelimit_tiers.errors.CostExceedsLimit` for a cost more
    than a rule's count. Keys are named by their prefix and their account's
    id (their counters share the account's hash tag).
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.calendar = Calendar()

    @abstractmethod
    def hit(self, prefix: str, account: int, category: str, cost: int = 1) -> Outcome:
        """Count one request of ``category`` and ``cost`` for the key, and decide on it."""

    @abstractmethod
    def peek(self, prefix: str, account: int, category: str, cost: int = 1) -> Outcome:
        """Report the state as :meth:`hit` of ``cost`` would see it, without counting."""

    @abstractmethod
    def clear(self, prefix: str, account: int, categories: Iterable[str]) -> None:
        """Reset the key's own counters in ``categories`` (not its account's shared ones)."""

    @abstractmethod
    def forget(self, keys: Iterable[tuple[str, int]]) -> None:
        """Evict the resolved policies of ``(prefix, account)`` keys, so the next check reloads them.

        Also gives each key a new generation, and a policy is kept only if it
        was loaded under the current one: a check that read the database
        before the eviction cannot put the old policy back after it.
        """

    def give_back(self, prefix: str, account: int, category: str, cost: int, decision: Decision) -> bool:
        """Uncount an admission (``decision``, from :meth:`hit`) that another throttle refused.

        Never frees more than that one admission; returns whether any rule
        gave it back. The default keeps it counted.
        """
        return False

    def hit_rate(self, name: str, rate: Rate) -> Decision | None:
        """Count one request in an ad-hoc bucket with a fixed ``rate`` (e.g. per client IP).

        ``name`` must not look like a key prefix (use a ``"kind:"`` start).
        Returns ``None`` when this storage cannot count such buckets.
        """
        return None

    def read_ledger(self, scopes: Sequence[LedgerScope], hours: Sequence[int]) -> dict[Slot, Counts]:
        """The usage ledger's counts of these accounts in these UTC hours, those the store still keeps.

        :meth:`hit` counts each request it decides on in the ledger (``RATELIMIT_TIERS_LEDGER_DAYS``),
        by key, category and hour: admitted, or refused by a rule; :meth:`give_back` moves an
        admission to the refusals. Only slots with a request are returned. The default: no ledger.
        """
        return {}

    def add_refusals(self, key: TallyKey, refusals: Sequence[Refusals]) -> None:
        """Add to the ledger refusals served without the store (``refusal_tally``). The default drops them."""
        return None
