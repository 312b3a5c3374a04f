"""CacheStorage (the counter on any Django cache) on LocMem, with its clock injected."""

from __future__ import annotations

import copy
import pickle

import pytest
from django.core.cache import caches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratelimit_tiers.errors import CostExceedsLimit
from ratelimit_tiers.models import APIKey, LimitRule, Tier
from ratelimit_tiers.names import account_tag, policy_key
from ratelimit_tiers.policies import load_policy
from ratelimit_tiers.storage.cache import CacheStorage
from tests.conftest import set_rule

pytestmark = pytest.mark.django_db

#: 39 s into a fixed window of the Free tier's 60/min.
START = 60 * 28_000_000 + 39.0


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def storage():
    storage = CacheStorage("default")
    storage.timer = Clock(START)
    return storage


def test_the_last_admitted_resets_when_the_refusal_says_to_retry(storage, account, raw_key):
    prefix = APIKey.objects.get().prefix
    decisions = [storage.hit(prefix, account.pk, "read").decision for _ in range(61)]
    last, refused = decisions[-2], decisions[-1]
    assert (last.allowed, last.remaining, refused.allowed) == (True, 0, False)
    # Remaining grows in the next window (21 s away), once 1/60 of it has passed.
    assert last.reset_after == refused.reset_after == 22
    assert last.reset_at == refused.reset_at
    assert refused.retry_after == 22

    storage.timer.now = START + 22 - 0.001
    assert storage.peek(prefix, account.pk, "read").decision.remaining == 0
    storage.timer.now = START + 22
    assert storage.peek(prefix, account.pk, "read").decision.remaining == 1
    assert storage.hit(prefix, account.pk, "read").decision.allowed


def test_every_admitted_reset_is_when_remaining_next_grows(storage, account, raw_key):
    prefix = APIKey.objects.get().prefix
    first = storage.hit(prefix, account.pk, "read").decision
    # With one request counted and none before, Remaining is back to 60 only
    # when that request stops weighing: at the end of the next window.
    assert (first.remaining, first.reset_after) == (59, 21 + 60)
    looked = storage.peek(prefix, account.pk, "read").decision
    assert (looked.remaining, looked.reset_after) == (59, 21 + 60)

    storage.timer.now = START + 60  # The next window, 39 s in: the one request weighs 21/60.
    decision = storage.hit(prefix, account.pk, "read").decision
    assert decision.remaining == 58
    storage.timer.now = START + 60 + decision.reset_after - 0.001
    assert storage.peek(prefix, account.pk, "read").decision.remaining == 58
    storage.timer.now = START + 60 + decision.reset_after
    assert storage.peek(prefix, account.pk, "read").decision.remaining == 59


def test_a_policy_stored_without_rules_or_a_shadow_flag_is_loaded_again(storage, account, raw_key, free_tier):
    # One pickled before policies carried their rules and shadow flag (an upgrade): the
    # tier's rules and flag must never be taken as none and off for want of the attributes.
    prefix = APIKey.objects.get().prefix
    outcome = storage.hit(prefix, account.pk, "read")
    assert (outcome.tier, outcome.shadow) == ("Free", False)
    Tier.objects.filter(pk=free_tier.pk).update(shadow=True)  # No signal: the stored policy stays.
    assert storage.hit(prefix, account.pk, "read").shadow is False
    tag = account_tag(account.pk)
    generation, policy = storage.cache.get(policy_key(tag, prefix))
    older = copy.copy(policy)
    del older.__dict__["shadow"], older.__dict__["rules"]
    storage.cache.set(policy_key(tag, prefix), (generation, older))
    outcome = storage.hit(prefix, account.pk, "read")
    assert (outcome.tier, outcome.shadow, outcome.decision.remaining) == ("Free", True, 57)


# --- Several rules, costs: properties on a fake clock, through the database and the cache.

#: Rule sets drawn for the properties: windows of 1 to 3 min, a day quota, per key or per account.
rule_sets = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=8),
        st.sampled_from(["1/min", "1/2min", "1/3min", "1/day"]),
        st.sampled_from(["key", "account"]),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda rule: rule[1:],
)
#: (seconds after START, cost) pairs in time order, over about two days.
costed_requests = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=180_000, allow_nan=False), st.integers(min_value=1, max_value=4)
    ),
    min_size=1,
    max_size=40,
).map(sorted)


def counters(cache):
    # LocMem's own store: the counts above zero, not the policy kept beside them nor the usage ledger.
    items = cache._cache.items()
    found = {key: pickle.loads(value) for key, value in items if ":read:" in key and ":u:" not in key}
    return {key: count for key, count in found.items() if count}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rules=rule_sets, requests=costed_requests)
def test_several_rules_hold_each_count_a_refusal_counts_nowhere_and_retry_after_is_enough(
    storage, free_tier, account, rules, requests
):
    LimitRule.objects.filter(tier=free_tier).delete()
    for count, rate, scope in rules:
        set_rule(free_tier, rate.replace("1/", f"{count}/"), scope=scope)
    cache = caches["default"]
    cache.clear()
    key = (
        APIKey.objects.get(account=account)
        if APIKey.objects.exists()
        else APIKey.objects.create_key(account=account, name="p")[0]
    )
    policy = load_policy(key.prefix)
    admitted: list[tuple[float, int]] = []
    for offset, cost in requests:
        storage.timer.now = START + offset
        before = counters(cache)
        try:
            outcome = storage.hit(key.prefix, account.pk, "read", cost)
        except CostExceedsLimit as exc:
            assert cost > exc.count == {rule.name: rule.count for rule in policy.rules}[exc.rule]
            assert counters(cache) == before
            continue
        if outcome.allowed:
            admitted.append((storage.timer.now, cost))
            continue
        assert counters(cache) == before  # A refusal changes no counter.
        wait = outcome.decision.retry_after
        assert outcome.decision in outcome.decisions and not outcome.decision.allowed
        assert wait == max(d.retry_after for d in outcome.decisions if not d.allowed)
        storage.timer.now += wait
        assert storage.peek(key.prefix, account.pk, "read", cost).allowed  # Waiting Retry-After is enough.
        storage.timer.now -= wait
    # No rule ever admitted more than its count in any of its windows (the counter's fixed
    # windows here) or periods.
    for rule in policy.rules:
        length = rule.window or 86_400  # The test's quotas are days, in UTC.
        per_period: dict[int, int] = {}
        for moment, cost in admitted:
            per_period[int(moment // length)] = per_period.get(int(moment // length), 0) + cost
        assert max(per_period.values(), default=0) <= rule.count, rule
