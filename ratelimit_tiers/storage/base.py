"""The storage contract: what the limiter asks a store (:class:`Storage`) and its answer (:data:`Outcome`)."""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

from ratelimit_tiers.algorithms import ALGORITHMS, CATEGORIES, Decision, Rate
from ratelimit_tiers.errors import wrap_errors as wrap_errors  # Where the storages find it.
from ratelimit_tiers.names import ACTIVE, bucket_key
from ratelimit_tiers.names import generation_key as generation_key  # Where redis.py finds it.


class Verdict(NamedTuple):
    """The store's answer on an active key, complete: the decision, the key's tier and its shadow flag.

    ``shadow`` is the tier's own flag, as stored with the key's policy
    (``RATELIMIT_TIERS_SHADOW`` is the throttle's to add). A named tuple, as
    :class:`~ratelimit_tiers.algorithms.Decision`: one is built on every check.
    """

    decision: Decision
    tier: str = ""
    shadow: bool = False

    @property
    def state(self) -> str:
        """A decision is only ever taken on an active key."""
        return ACTIVE


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


class Storage(ABC):
    """Where counters and resolved policies live.

    Subclasses make :meth:`hit` atomic across processes: two concurrent hits
    on a key with one slot left never both get admitted. A refused hit does
    not consume quota. Every method raises :class:`StorageUnavailable` when
    the backend fails.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias

    @abstractmethod
    def hit(self, prefix: str, category: str) -> Outcome:
        """Count one request of ``category`` for the key and decide on it."""

    @abstractmethod
    def peek(self, prefix: str, category: str) -> Outcome:
        """Report the state as :meth:`hit` would see it, without counting."""

    @abstractmethod
    def clear(self, prefix: str) -> None:
        """Reset every counter of the key."""

    @abstractmethod
    def forget(self, prefixes: Iterable[str]) -> None:
        """Evict resolved policies, so the next check reloads them.

        Also gives each key a new generation, and a policy is kept only if it
        was loaded under the current one: a check that read the database
        before the eviction cannot put the old policy back after it.
        """

    def give_back(self, prefix: str, category: str, decision: Decision) -> bool:
        """Uncount an admission (``decision``, from :meth:`hit`) that another throttle refused.

        Never frees more than that one admission; returns whether it was
        given back. The default keeps it counted.
        """
        return False

    def hit_rate(self, name: str, rate: Rate) -> Decision | None:
        """Count one request in an ad-hoc bucket with a fixed ``rate`` (e.g. per client IP).

        ``name`` must not look like a key prefix (use a ``"kind:"`` start).
        Returns ``None`` when this storage cannot count such buckets.
        """
        return None

    def bucket_keys(self, prefix: str) -> list[str]:
        return [bucket_key(prefix, c, a) for c in CATEGORIES for a in ALGORITHMS]
