"""The pure core, on a fake clock: no Django needed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratelimit_tiers.algorithms import (
    Decision,
    Rate,
    counter_decide,
    exact_decide,
    headline,
    parse_rate,
    quota_decide,
)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("60/min", Rate(60, 60)),
        ("100/10s", Rate(100, 10)),
        ("5000/hour", Rate(5000, 3600)),
        ("1/day", Rate(1, 86400)),
        (" 7 / minutes ", Rate(7, 60)),
    ],
)
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "60", "60/fortnight", "x/min", "10/0s", "-1/min"])
def test_parse_rate_rejects(text):
    with pytest.raises(ValueError, match="invalid rate"):
        parse_rate(text)


def test_exact_admits_limit_then_refuses_until_oldest_ages_out():
    rate, stamps = Rate(3, 60), ()
    remaining = []
    for now in (0, 10_000, 20_000):
        decision, stamps = exact_decide(stamps, now, rate)
        assert decision.allowed
        remaining.append(decision.remaining)
    assert remaining == [2, 1, 0]
    decision, stamps = exact_decide(stamps, 30_000, rate)
    assert not decision.allowed
    assert decision.reset_after == 30.0
    assert decision.retry_after == 30
    decision, stamps = exact_decide(stamps, 60_000, rate)
    assert decision.allowed
    assert decision.remaining == 0
    assert decision.reset_after == 10.0


def test_exact_look_keeps_nothing_and_an_admission_keeps_its_stamp():
    # As the script does: a look counts nothing, and an admission keeps the stamp
    # the script wrote (its clock rounded up), which the reset counts from.
    rate = Rate(2, 1)
    decision, stamps = exact_decide((), 5_000, rate, charge=False)
    assert (decision.allowed, decision.remaining, decision.reset_after, stamps) == (True, 2, 0, ())
    decision, stamps = exact_decide(stamps, 5_000, rate, stamp=5_001)
    assert (decision.remaining, decision.reset_after, stamps) == (1, 1.001, (5_001,))
    decision, stamps = exact_decide(stamps, 5_500, rate, charge=False)
    assert (decision.remaining, decision.reset_after, stamps) == (1, 0.501, (5_001,))


def test_exact_zero_limit_refuses():
    decision, _ = exact_decide((), 5_000, Rate(0, 60))
    assert not decision.allowed
    assert decision.retry_after == 60


def test_counter_weights_previous_window():
    rate = Rate(10, 60)
    # Half-way into a window: half of the previous window's 10 still counts.
    decision = counter_decide(10, 4, 90_000, rate)
    assert decision.allowed
    assert decision.remaining == 0
    decision = counter_decide(10, 5, 90_000, rate)
    assert not decision.allowed
    # 10 * (60 - e) / 60 + 5 + 1 <= 10 once e >= 36 s, 6 s from now.
    assert decision.reset_after == 6.0


def test_counter_waits_for_next_window_when_current_is_full():
    decision = counter_decide(0, 10, 30_000, Rate(10, 60))
    assert not decision.allowed
    # Next window starts in 30 s; then 10 * (1 - x/60) + 1 <= 10 needs x >= 6.
    assert decision.reset_after == 36.0


# Milliseconds, as the store's clock gives them.
schedules = st.lists(st.integers(min_value=0, max_value=600_000), min_size=1, max_size=300).map(sorted)
rates = st.builds(Rate, st.integers(min_value=1, max_value=20), st.integers(min_value=1, max_value=120))


def admitted_exact(schedule, rate):
    stamps, admitted = (), []
    for now in schedule:
        decision, stamps = exact_decide(stamps, now, rate)
        if decision.allowed:
            admitted.append(now)
    return admitted


def max_in_any_window(times, window):
    # Sliding windows [t, t + window) starting at each admitted time are the worst case.
    return max((sum(1 for u in times if t <= u < t + window * 1000) for t in times), default=0)


@settings(max_examples=300, deadline=None)
@given(schedule=schedules, rate=rates)
def test_exact_never_exceeds_limit_in_any_window(schedule, rate):
    assert max_in_any_window(admitted_exact(schedule, rate), rate.window) <= rate.limit


@settings(max_examples=300, deadline=None)
@given(schedule=schedules, rate=rates)
def test_exact_retry_after_is_enough_and_tight(schedule, rate):
    stamps = ()
    for now in schedule:
        decision, stamps = exact_decide(stamps, now, rate)
        if not decision.allowed:
            wait = decision.retry_after
            assert exact_decide(stamps, now + wait * 1000, rate)[0].allowed
            if wait > 1:
                assert not exact_decide(stamps, now + (wait - 1) * 1000, rate)[0].allowed


def admitted_counter(schedule, rate):
    previous = current = 0
    index, admitted = None, []
    for now in schedule:
        i = now // (rate.window * 1000)
        if index is not None and i != index:
            previous, current = (current if i == index + 1 else 0), 0
        index = i
        if counter_decide(previous, current, now, rate).allowed:
            current += 1
            admitted.append(now)
    return admitted


@settings(max_examples=300, deadline=None)
@given(schedule=schedules, rate=rates)
def test_counter_stays_within_documented_bound(schedule, rate):
    assert max_in_any_window(admitted_counter(schedule, rate), rate.window) <= 2 * rate.limit


#: A counter's state at a moment (``now`` in ms): the keyword arguments of counter_decide.
counter_states = {
    "previous": st.integers(0, 50),
    "current": st.integers(0, 50),
    "now": st.integers(0, 10_000_000),
    "rate": rates,
}


def counter_state_at(previous, current, now, later, rate):
    """(previous, current) at ``later`` if no request comes after the ones counted at ``now``."""
    crossed = later // (rate.window * 1000) - now // (rate.window * 1000)
    return {0: (previous, current), 1: (current, 0)}.get(crossed, (0, 0))


@settings(max_examples=300, deadline=None)
@given(**counter_states)
def test_counter_retry_after_is_enough(previous, current, now, rate):
    decision = counter_decide(previous, current, now, rate)
    if decision.allowed:
        return
    later = now + decision.retry_after * 1000
    prev, cur = counter_state_at(previous, current, now, later, rate)
    assert counter_decide(prev, cur, later, rate).allowed


def test_counter_reset_of_the_last_admitted_is_the_next_refusals_retry_after():
    # 39 s into a window with nothing before it: the 60th request and the 429
    # right after it name the same moment, when one more request fits.
    rate, now = Rate(60, 60), 60_000 * 1000 + 39_000
    last = counter_decide(0, 59, now, rate)
    refused = counter_decide(0, 60, now, rate)
    assert (last.allowed, last.remaining, refused.allowed) == (True, 0, False)
    assert last.reset_after == refused.reset_after == 21 + 1  # The next window, once 1/60 of it passed.
    assert last.reset_at == refused.reset_at


@settings(max_examples=500, deadline=None)
@given(**counter_states, charge=st.booleans())
def test_counter_reset_is_when_remaining_next_grows(previous, current, now, rate, charge):
    decision = counter_decide(previous, current, now, rate, charge=charge)
    if not decision.allowed:
        return
    counted = current + charge
    reset = round(decision.reset_after * 1000)
    if decision.remaining == rate.limit:
        assert reset == 0  # Nothing counts: it cannot grow.
        return

    def remaining_at(later):
        prev, cur = counter_state_at(previous, counted, now, later, rate)
        return counter_decide(prev, cur, later, rate, charge=False).remaining

    assert remaining_at(now + reset) > decision.remaining
    assert remaining_at(now + reset - 1) == decision.remaining  # Not a millisecond sooner.


@settings(max_examples=300, deadline=None)
@given(**counter_states)
def test_counter_peek_counts_nothing(previous, current, now, rate):
    looked = counter_decide(previous, current, now, rate, charge=False)
    charged = counter_decide(previous, current, now, rate)
    assert looked.allowed == charged.allowed
    assert looked.remaining == (charged.remaining + 1 if charged.allowed else 0)


# --- Costs: a request may count for more than one (``ratelimit_cost``).

#: (ms, cost) pairs in time order.
costed_schedules = st.lists(
    st.tuples(st.integers(min_value=0, max_value=600_000), st.integers(min_value=1, max_value=5)),
    min_size=1,
    max_size=200,
).map(sorted)


def max_cost_in_any_window(admitted, window):
    return max((sum(c for u, c in admitted if t <= u < t + window * 1000) for t, _ in admitted), default=0)


@settings(max_examples=300, deadline=None)
@given(schedule=costed_schedules, rate=rates)
def test_exact_with_costs_never_exceeds_limit_in_any_window(schedule, rate):
    stamps, admitted = (), []
    for now, cost in schedule:
        decision, stamps = exact_decide(stamps, now, rate, cost=cost)
        if decision.allowed:
            admitted.append((now, cost))
    assert max_cost_in_any_window(admitted, rate.window) <= rate.limit


@settings(max_examples=300, deadline=None)
@given(schedule=costed_schedules, rate=rates)
def test_exact_with_costs_retry_after_is_enough_and_tight_and_a_refusal_keeps_nothing(schedule, rate):
    stamps: tuple[int, ...] = ()
    for now, cost in schedule:
        decision, kept = exact_decide(stamps, now, rate, cost=cost)
        if decision.allowed:
            stamps = kept
            continue
        assert kept == tuple(stamps[-rate.limit :])  # Nothing written.
        if cost > rate.limit:
            continue  # Never admitted: the throttle answers 403 before asking.
        wait = decision.retry_after
        assert exact_decide(stamps, now + wait * 1000, rate, cost=cost)[0].allowed
        if wait > 1:
            assert not exact_decide(stamps, now + (wait - 1) * 1000, rate, cost=cost)[0].allowed


@settings(max_examples=300, deadline=None)
@given(**counter_states, cost=st.integers(min_value=1, max_value=5))
def test_counter_with_costs_retry_after_is_enough(previous, current, now, rate, cost):
    decision = counter_decide(previous, current, now, rate, cost=cost)
    if decision.allowed or cost > rate.limit:
        return
    later = now + decision.retry_after * 1000
    prev, cur = counter_state_at(previous, current, now, later, rate)
    assert counter_decide(prev, cur, later, rate, cost=cost).allowed


@settings(max_examples=300, deadline=None)
@given(schedule=costed_schedules, limit=st.integers(min_value=1, max_value=20))
def test_a_quota_never_admits_more_than_its_count_in_a_period(schedule, limit):
    period = 86_400_000 // 4  # Periods of 6 h over the schedule's 10 minutes: most share one.
    used: dict[int, int] = {}
    for now, cost in schedule:
        start = now // period * period
        decision = quota_decide(used.get(start, 0), now, start, start + period, limit, cost=cost)
        if decision.allowed:
            used[start] = used.get(start, 0) + cost
            assert decision.remaining == limit - used[start]
        else:
            # Refused until the period ends, when a new one starts from nothing.
            assert decision.reset_after == (start + period - now) / 1000
            assert decision.quota and decision.remaining == max(0, limit - used.get(start, 0))
    assert all(count <= limit for count in used.values())


def test_a_quota_look_counts_nothing_and_an_unused_one_has_no_reset():
    look = quota_decide(0, 1_000, 0, 86_400_000, 5, charge=False)
    assert (look.allowed, look.remaining, look.reset_after, look.window) == (True, 5, 0, 86_400)
    used = quota_decide(2, 1_000, 0, 86_400_000, 5, cost=3)
    assert (used.allowed, used.remaining, used.reset_after) == (True, 0, 86_399.0)


def test_headline_is_the_longest_refusal_else_the_fewest_remaining():
    def decision(allowed, remaining, reset, limit=10):
        return Decision(allowed, limit, 60, remaining, reset, 0.0)

    minute, day = decision(True, 3, 20), decision(True, 3, 30_000, limit=1000)
    assert headline([minute, decision(True, 7, 5)]) == minute
    assert headline([minute, day]) == day  # A tie on remaining: the later reset.
    assert headline([decision(True, 3, 20, limit=5), decision(True, 3, 20, limit=4)]).limit == 4
    short, long = decision(False, 0, 5), decision(False, 0, 50)
    assert headline([minute, short, long]) == long


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.integers(1, 4),  # limit: small ranges, so ties are common
            st.integers(0, 3),  # remaining
            st.sampled_from([0.0, 0.5, 1.0, 60.0]),  # reset_after
            st.integers(0, 9),  # which decision, to tell equal ones apart
        ),
        min_size=1,
        max_size=5,
    )
)
def test_headline_is_its_definition(drawn):
    """The one-pass headline picks what its docstring defines, the first such rule on a full tie."""
    decisions = [
        Decision(a, limit, 60, remaining, reset, 0.0, f"r{n}") for a, limit, remaining, reset, n in drawn
    ]
    refused = [d for d in decisions if not d.allowed]
    expected = (
        max(refused, key=lambda d: d.reset_after)
        if refused
        else min(decisions, key=lambda d: (d.remaining, -d.reset_after, d.limit))
    )
    assert headline(decisions) is expected
