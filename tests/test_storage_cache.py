"""CacheStorage (the counter on any Django cache) on LocMem, with its clock injected."""

from __future__ import annotations

import copy

import pytest

from ratelimit_tiers.models import APIKey, Tier
from ratelimit_tiers.names import account_tag, policy_key
from ratelimit_tiers.storage.cache import CacheStorage

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
