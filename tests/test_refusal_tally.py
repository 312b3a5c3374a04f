"""The tally of refusals a process served from memory: batched per key and hour, sent once, never twice."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from ratelimit_tiers import rollup, tally_flush, usage
from ratelimit_tiers.algorithms import Decision
from ratelimit_tiers.ledger import HOUR, Refusals
from ratelimit_tiers.refusal_tally import STALE_SECONDS, RefusalTally, TallyKey, tally
from tests.conftest import URL, only_rule


def refusal(at: float, rule: str = "all-60s") -> Decision:
    return Decision(False, 3, 60, 0, 30.0, at, rule)


def test_a_batch_adds_up_each_rule_and_hour_and_keeps_the_last_refusal(settings):
    clock = [0.0]
    counted = RefusalTally(lambda: clock[0])
    hour = 490_000 * HOUR
    for at, rule in [(hour + 20, "a"), (hour + 10, "a"), (hour + 15, "b"), (hour + HOUR + 1, "a")]:
        counted.add("p", 1, "read", refusal(at, rule))
    counted.add("q", 1, "read", refusal(hour + 5))
    assert sorted(counted.take("p", 1, "read")) == [
        Refusals("a", 1, (hour + HOUR + 1) * 1000),
        Refusals("a", 2, (hour + 20) * 1000),
        Refusals("b", 1, (hour + 15) * 1000),
    ]
    assert counted.take("p", 1, "read") == ()  # Taken once.
    assert counted  # q's is still there.


def test_only_batches_that_waited_are_flushed_and_a_restored_one_adds_up():
    clock = [100.0]
    counted = RefusalTally(lambda: clock[0])
    counted.add("p", 1, "read", refusal(1000.0))
    clock[0] += STALE_SECONDS / 2
    counted.add("q", 2, "write", refusal(1000.0))
    assert counted.take_stale() == []
    clock[0] += STALE_SECONDS / 2
    ((key, batch),) = counted.take_stale()
    assert (key, batch) == (TallyKey("p", 1, "read"), (Refusals("all-60s", 1, 1_000_000),))
    counted.restore(key, batch)
    counted.add("p", 1, "read", refusal(1001.0))
    assert counted.take("p", 1, "read") == (Refusals("all-60s", 2, 1_001_000),)
    assert [key for key, _batch in counted.take_stale(0)] == [TallyKey("q", 2, "write")]
    assert not counted


def test_nothing_is_tallied_with_the_ledger_off(settings):
    settings.RATELIMIT_TIERS_LEDGER_DAYS = 0
    counted = RefusalTally()
    counted.add("p", 1, "read", refusal(1000.0))
    assert not counted


@pytest.mark.django_db
def test_the_process_flushes_what_no_check_carried_in_the_background(backend, free_tier, api):
    only_rule(free_tier, 1)
    assert [api.get(URL).status_code for _ in range(3)] == [200, 429, 429]
    assert tally
    deadline = time.monotonic() + 10 * STALE_SECONDS  # Bounded: the thread sends it after STALE_SECONDS.
    while tally and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not tally
    assert tally_flush.flush() == 0
    now = datetime.now(timezone.utc)
    rows = usage.hourly(now - timedelta(hours=2), now + timedelta(hours=2))
    assert [(row.admitted, row.refused) for row in rows] == [(1, 2)]


def test_a_batch_waits_for_a_check_to_carry_it_past_a_local_refusals_life(settings):
    assert tally_flush.stale_after() == STALE_SECONDS  # LOCAL_REFUSAL_SECONDS is 1.
    settings.RATELIMIT_TIERS_LOCAL_REFUSAL_SECONDS = 5
    assert tally_flush.stale_after() == 6
    settings.RATELIMIT_TIERS_LOCAL_REFUSAL_SECONDS = 3600
    assert tally_flush.stale_after() == tally_flush.MAX_WAIT < rollup.GRACE_SECONDS


def test_a_failing_round_never_ends_the_flushing_thread(settings, caplog):
    # A setting changed under a running thread (as tests do) made a round raise, and the thread died.
    settings.RATELIMIT_TIERS_LOCAL_REFUSAL_SECONDS = "1"
    tally_flush.tick()
    assert "flushing local refusals failed" in caplog.text
