"""Sliding-window counters and calendar quotas on any Django cache, through its atomic ``add``/``incr``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from django.core.cache import BaseCache, caches

from ratelimit_tiers.algorithms import READ, Decision, Rate, counter_decide, quota_decide
from ratelimit_tiers.conf import conf
from ratelimit_tiers.errors import CostExceedsLimit, StorageUnavailable
from ratelimit_tiers.ledger import Counts, LedgerScope, Refusals, Slot
from ratelimit_tiers.names import (
    ACTIVE,
    COUNTER_KIND,
    EXPIRED,
    POOL,
    QUOTA_KIND,
    account_tag,
    counter_base,
    counter_key,
    generation_key,
    policy_key,
)
from ratelimit_tiers.policies import Policy, load_policy
from ratelimit_tiers.refusal_tally import TallyKey, tally
from ratelimit_tiers.rules import ACCOUNT, KEY, Rule
from ratelimit_tiers.storage.base import (
    GENERATION_TIMEOUT,
    INSTALL_ATTEMPTS,
    Calendar,
    Outcome,
    Storage,
    Unusable,
    Verdict,
    new_generation,
    stamp_ms,
    wrap_errors,
)
from ratelimit_tiers.storage.cache_ledger import CacheLedger


class CacheStorage(Storage):
    """Sliding-window counters and calendar quotas on any Django cache, through atomic ``add``/``incr``.

    Each rule's counter is incremented by the request's cost before the
    check, and every increment is given back with ``decr`` when any rule
    refuses, so a 429 never consumes quota. Concurrent refusals can briefly
    inflate a count, which can only refuse early, never admit more. ``exact``
    rules fall back to the counter here; it is as atomic as the backend's
    ``incr`` (memcached and django-redis are; LocMem is within one process).
    """

    #: The app server's clock (Unix seconds): tests may set their own.
    timer: Callable[[], float] = time.time

    def __init__(self, alias: str) -> None:
        super().__init__(alias)
        self.calendar = Calendar(lambda: self.timer())

    @property
    def cache(self) -> BaseCache:
        return caches[self.alias]

    @property
    def ledger(self) -> CacheLedger:
        return CacheLedger(self.cache)

    def hit(self, prefix: str, account: int, category: str, cost: int = 1) -> Outcome:
        carried = tally.take(prefix, account, category) if tally else ()
        if carried:  # Refusals this process served for the key: into the ledger with this check.
            self.add_refusals(TallyKey(prefix, account, category), carried)
        outcome = self._check(prefix, account, category, cost, charge=True)
        if isinstance(outcome, Verdict) and conf.LEDGER_DAYS:
            # As the clients see it: a shadow-mode refusal got through.
            through = outcome.allowed or outcome.shadow or conf.SHADOW
            decision = outcome.decision
            refused_by = None if through or decision is None else decision.policy
            now = round(decision.now * 1000) if decision is not None else int(self.timer() * 1000)
            with wrap_errors():
                self.ledger.count(account, prefix, category, now, refused_by)
        return outcome

    def peek(self, prefix: str, account: int, category: str, cost: int = 1) -> Outcome:
        return self._check(prefix, account, category, cost, charge=False)

    def clear(self, prefix: str, account: int, categories: Iterable[str]) -> None:
        policy = self._policy(prefix, account)
        now = int(self.timer() * 1000)
        tag = account_tag(account)
        keys = []
        for category in categories:
            for rule in policy.applicable(category):
                if rule.scope == KEY:
                    counter = self._counter(counter_base(tag, prefix, category), rule, now)
                    keys += [counter.current, counter.previous]
        with wrap_errors():
            self.cache.delete_many([key for key in keys if key])

    def forget(self, keys: Iterable[tuple[str, int]]) -> None:
        pairs, generation = [(prefix, account_tag(account)) for prefix, account in keys], new_generation()
        with wrap_errors():
            # The generation first: a policy loaded under the old one is ignored from now on.
            self.cache.set_many({generation_key(t, p): generation for p, t in pairs}, GENERATION_TIMEOUT)
            self.cache.delete_many([policy_key(t, p) for p, t in pairs])

    def _policy(self, prefix: str, account: int) -> Policy:
        """The stored policy if it was loaded under the key's current generation, else a fresh load.

        The cache cannot install conditionally, so each policy is stored with
        the generation read before loading it, and counts only while that is
        still the key's: a load that raced an eviction is never used again.
        """
        tag = account_tag(account)
        keys = [policy_key(tag, prefix), generation_key(tag, prefix)]
        for _attempt in range(INSTALL_ATTEMPTS):
            with wrap_errors():
                found = self.cache.get_many(keys)
            generation = found.get(keys[1])
            stored = _stored_policy(found.get(keys[0]))
            if stored is not None and stored[0] == generation:
                return stored[1]
            policy = load_policy(prefix)
            with wrap_errors():
                self.cache.set(keys[0], (generation, policy), policy.timeout(self.timer()))
                if self.cache.get(keys[1]) == generation:
                    return policy
        raise StorageUnavailable(f"the policy of {prefix} changed during each of {INSTALL_ATTEMPTS} loads")

    def _check(self, prefix: str, account: int, category: str, cost: int, *, charge: bool) -> Outcome:
        policy = self._policy(prefix, account)
        now = int(self.timer() * 1000)
        if policy.state != ACTIVE:
            return Unusable(policy.state)
        if policy.expires_at and now >= policy.expires_at * 1000:
            return Unusable(EXPIRED)
        rules = policy.applicable(category)
        for rule in rules:
            if cost > rule.count:
                raise CostExceedsLimit(cost, rule.count, rule.name)
        tag = account_tag(account)
        bases = {KEY: counter_base(tag, prefix, category), ACCOUNT: counter_base(tag, POOL, category)}
        counters = [self._counter(bases[rule.scope], rule, now) for rule in rules]
        decisions = self._count(counters, now, cost, charge)
        return Verdict(decisions, policy.tier, policy.shadow)

    def give_back(self, prefix: str, account: int, category: str, cost: int, decision: Decision) -> bool:
        policy = self._policy(prefix, account)
        now = stamp_ms(decision)
        tag = account_tag(account)
        bases = {KEY: counter_base(tag, prefix, category), ACCOUNT: counter_base(tag, POOL, category)}
        given = False
        with wrap_errors():
            self.ledger.give_back(account, prefix, category, now)
            for rule in policy.applicable(category):
                # The admission's counter, whether it is still the current one or now the previous.
                try:
                    self.cache.decr(self._counter(bases[rule.scope], rule, now).current, cost)
                    given = True
                except ValueError:  # Expired or evicted since.
                    pass
        return given

    def read_ledger(self, scopes: Sequence[LedgerScope], hours: Sequence[int]) -> dict[Slot, Counts]:
        with wrap_errors():
            return self.ledger.read(scopes, hours)

    def add_refusals(self, key: TallyKey, refusals: Sequence[Refusals]) -> None:
        with wrap_errors():
            self.ledger.add_refusals(key.account, key.prefix, key.category, refusals)

    def hit_rate(self, name: str, rate: Rate) -> Decision:
        now = int(self.timer() * 1000)
        counter = self._counter(counter_base(name, name, READ), Rule(rate.limit, rate.window), now)
        return self._count([counter], now, 1, charge=True)[0]

    def _counter(self, base: str, rule: Rule, now: int) -> _Counter:
        key = counter_key(base, rule.name, QUOTA_KIND if rule.calendar else COUNTER_KIND)
        if rule.calendar:
            start, end = self.calendar.period(rule.calendar)
            # Kept an hour past the period's end, as the Redis script keeps it.
            return _Counter(rule, f"{key}:{start}", "", max(1, (end - now) // 1000 + 3600), start, end)
        index = now // (rule.window * 1000)
        return _Counter(rule, f"{key}:{index}", f"{key}:{index - 1}", 2 * rule.window, 0, 0)

    def _count(self, counters: list[_Counter], now: int, cost: int, charge: bool) -> tuple[Decision, ...]:
        counts, charged = [], []
        with wrap_errors():
            for counter in counters:
                previous = self._int(self.cache.get(counter.previous, 0)) if counter.previous else 0
                if charge:
                    self.cache.add(counter.current, 0, counter.timeout)
                    try:
                        current = self._int(self.cache.incr(counter.current, cost)) - cost
                    except ValueError:  # Evicted or expired between add and incr.
                        self.cache.set(counter.current, cost, counter.timeout)
                        current = 0
                    charged.append(counter.current)
                else:
                    current = self._int(self.cache.get(counter.current, 0))
                counts.append((previous, current))
            decisions = [
                counter.decide(previous, current, now, cost, charge)
                for counter, (previous, current) in zip(counters, counts, strict=True)
            ]
            if all(decision.allowed for decision in decisions):
                return tuple(decisions)
            for key in charged:
                self.cache.decr(key, cost)
        # Refused: every rule as it stood before this request, which counts nowhere.
        return tuple(
            counter.decide(previous, current, now, cost, False) if decision.allowed else decision
            for counter, (previous, current), decision in zip(counters, counts, decisions, strict=True)
        )

    @staticmethod
    def _int(value: Any) -> int:
        # A backend with IGNORE_EXCEPTIONS answers None instead of raising:
        # that is an outage, not a count of zero.
        if not isinstance(value, int):
            raise TypeError(f"the cache returned {value!r} instead of a count")
        return value


class _Counter(NamedTuple):
    """One rule's counter in the cache: its current (and, for a window, previous) key."""

    rule: Rule
    current: str
    previous: str
    timeout: int
    start: int
    end: int

    def decide(self, previous: int, current: int, now: int, cost: int, charge: bool) -> Decision:
        rule = self.rule
        if rule.calendar:
            decision = quota_decide(current, now, self.start, self.end, rule.count, charge=charge, cost=cost)
        else:
            rate = Rate(rule.count, rule.window)
            decision = counter_decide(previous, current, now, rate, charge=charge, cost=cost)
        return decision._replace(policy=rule.name)


def _stored_policy(value: Any) -> tuple[str | None, Policy] | None:
    # A policy stored before policies carried their rules is loaded again.
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[1], Policy)
        and "rules" in vars(value[1])
    ):
        return value[0], value[1]
    return None
