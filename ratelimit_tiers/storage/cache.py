"""The sliding-window counter on any Django cache, through its atomic ``add``/``incr``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from django.core.cache import BaseCache, caches

from ratelimit_tiers.algorithms import COUNTER, READ, Decision, Rate, counter_decide
from ratelimit_tiers.conf import conf
from ratelimit_tiers.errors import StorageUnavailable
from ratelimit_tiers.names import ACTIVE, EXPIRED, bucket_key, generation_key, policy_key
from ratelimit_tiers.policies import Policy, load_policy
from ratelimit_tiers.storage.base import (
    GENERATION_TIMEOUT,
    INSTALL_ATTEMPTS,
    Outcome,
    Storage,
    Unusable,
    Verdict,
    new_generation,
    stamp_ms,
    wrap_errors,
)


class CacheStorage(Storage):
    """Sliding-window counter on any Django cache, through atomic ``add``/``incr``.

    The counter is incremented before the check and given back with ``decr``
    when the request is refused, so a 429 never consumes quota. Concurrent
    refusals can briefly inflate the count, which can only refuse early, never
    admit more. ``exact`` tiers fall back to this algorithm here; it is as
    atomic as the backend's ``incr`` (memcached and django-redis are; LocMem is
    within one process).
    """

    #: The app server's clock (Unix seconds): tests may set their own.
    timer: Callable[[], float] = time.time

    @property
    def cache(self) -> BaseCache:
        return caches[self.alias]

    def hit(self, prefix: str, category: str) -> Outcome:
        return self._check(prefix, category, charge=True)

    def peek(self, prefix: str, category: str) -> Outcome:
        return self._check(prefix, category, charge=False)

    def clear(self, prefix: str) -> None:
        now = self.timer()
        keys = []
        for base in self.bucket_keys(prefix):
            for window in {60, *self._windows(prefix)}:
                index = int(now // window)
                keys += [f"{base}:{index}", f"{base}:{index - 1}"]
        with wrap_errors():
            self.cache.delete_many(keys)

    def forget(self, prefixes: Iterable[str]) -> None:
        prefixes, generation = list(prefixes), new_generation()
        with wrap_errors():
            # The generation first: a policy loaded under the old one is ignored from now on.
            self.cache.set_many({generation_key(p): generation for p in prefixes}, GENERATION_TIMEOUT)
            self.cache.delete_many([policy_key(p) for p in prefixes])

    def _windows(self, prefix: str) -> set[int]:
        with wrap_errors():
            policy = _stored_policy(self.cache.get(policy_key(prefix)))
        return {policy[1].window} if policy else set()

    def _policy(self, prefix: str) -> Policy:
        """The stored policy if it was loaded under the key's current generation, else a fresh load.

        The cache cannot install conditionally, so each policy is stored with
        the generation read before loading it, and counts only while that is
        still the key's: a load that raced an eviction is never used again.
        """
        keys = [policy_key(prefix), generation_key(prefix)]
        for _attempt in range(INSTALL_ATTEMPTS):
            with wrap_errors():
                found = self.cache.get_many(keys)
            generation = found.get(keys[1])
            stored = _stored_policy(found.get(keys[0]))
            if stored is not None and stored[0] == generation:
                return stored[1]
            policy = load_policy(prefix)
            with wrap_errors():
                self.cache.set(keys[0], (generation, policy), conf.POLICY_TIMEOUT)
                if self.cache.get(keys[1]) == generation:
                    return policy
        raise StorageUnavailable(f"the policy of {prefix} changed during each of {INSTALL_ATTEMPTS} loads")

    def _check(self, prefix: str, category: str, *, charge: bool) -> Outcome:
        policy = self._policy(prefix)
        now = int(self.timer() * 1000)
        if policy.state != ACTIVE:
            return Unusable(policy.state)
        if policy.expires_at and now >= policy.expires_at * 1000:
            return Unusable(EXPIRED)
        base = bucket_key(prefix, category, COUNTER)
        return Verdict(self._count(base, policy.rate(category), now, charge), policy.tier, policy.shadow)

    def give_back(self, prefix: str, category: str, decision: Decision) -> bool:
        # The admission's window counter, whether it is still the current one or now the previous.
        index = stamp_ms(decision) // (decision.window * 1000)
        with wrap_errors():
            try:
                self.cache.decr(f"{bucket_key(prefix, category, COUNTER)}:{index}")
            except ValueError:  # Expired or evicted since.
                return False
        return True

    def hit_rate(self, name: str, rate: Rate) -> Decision:
        return self._count(bucket_key(name, READ, COUNTER), rate, int(self.timer() * 1000), charge=True)

    def _count(self, base: str, rate: Rate, now: int, charge: bool) -> Decision:
        index = now // (rate.window * 1000)
        current_key, previous_key = f"{base}:{index}", f"{base}:{index - 1}"
        with wrap_errors():
            previous = self._int(self.cache.get(previous_key, 0))
            if not charge:
                current = self._int(self.cache.get(current_key, 0))
                return counter_decide(previous, current, now, rate, charge=False)
            timeout = 2 * rate.window
            self.cache.add(current_key, 0, timeout)
            try:
                current = self._int(self.cache.incr(current_key))
            except ValueError:  # Evicted or expired between add and incr.
                self.cache.set(current_key, 1, timeout)
                current = 1
            decision = counter_decide(previous, current - 1, now, rate)
            if not decision.allowed:
                self.cache.decr(current_key)
        return decision

    @staticmethod
    def _int(value: Any) -> int:
        # A backend with IGNORE_EXCEPTIONS answers None instead of raising:
        # that is an outage, not a count of zero.
        if not isinstance(value, int):
            raise TypeError(f"the cache returned {value!r} instead of a count")
        return value


def _stored_policy(value: Any) -> tuple[str | None, Policy] | None:
    # A policy stored before policies carried their shadow flag is loaded again.
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[1], Policy)
        and "shadow" in vars(value[1])
    ):
        return value[0], value[1]
    return None
