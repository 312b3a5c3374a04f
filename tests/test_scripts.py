"""The Lua script against its reference, ``algorithms.py``, on a real redis-server: a differential test.

Random schedules of hits and looks, each on a key of its own with a random set
of rules (exact and counter windows of 1 or 2 s, a calendar quota whose
period, passed in by the caller as the app server does, lasts 1.5 s, per key
or per account), random costs, and rules that now and then change. They run
interleaved so that their waits overlap. The script reports the ``now`` it
read from the Redis server's clock; the reference decides with that same
``now`` (and, for an exact-mode admission, the stamp the script wrote, read
back from its ring), and the two must agree on every rule's decision:
allowed, limit, window, remaining and reset, and on the whole: a request is
admitted only if every rule admits it, and a refusal counts in no rule. Exact
rings this small are read whole (exact.lua); a second run reads them slot by
slot, as it reads rings above ``EXACT_WHOLE``.
"""

from __future__ import annotations

import heapq
import random
import time
from collections import Counter

import pytest
from redis import Redis

from ratelimit_tiers.algorithms import (
    COUNTER,
    EXACT,
    READ,
    Decision,
    Rate,
    counter_decide,
    exact_decide,
    quota_decide,
)
from ratelimit_tiers.errors import CostExceedsLimit
from ratelimit_tiers.names import (
    ACTIVE,
    POOL,
    counter_base,
    counter_key,
    generation_key,
    ledger_key,
    policy_key,
)
from ratelimit_tiers.policies import Policy, kind
from ratelimit_tiers.rules import ACCOUNT, DAY, Rule
from ratelimit_tiers.storage.base import Verdict
from ratelimit_tiers.storage.redis import SCRIPT, SCRIPT_SHA, RedisStorage, flatten

#: What the ledger counts in these checks: nothing (the ledger has tests of its own).
LEDGER_OFF = ""

pytestmark = pytest.mark.redis

SCHEDULES = 200  # Per algorithm.
STEPS = 12
#: The chance that a step first installs new rules.
RULE_CHANGES = 0.1
COUNTS = (1, 2, 2, 3, 3, 4, 5, 8)
COSTS = (1, 1, 1, 1, 2, 3)
#: Milliseconds between two steps of a schedule: bursts in one millisecond, and gaps across the window.
GAPS = (0, 0, 0, 1, 2, 5, 20, 100, 300, 500, 700, 999, 1000, 1001, 1500)
#: How long the test's "day" lasts (ms): the script takes the quota periods it is given.
DAY_MS = 1500
#: Bytes of one u48 slot of the exact ring, and slots in its header (see exact.lua).
SLOT, HEADER = 6, 5


def day_bounds(now_ms: int) -> tuple[int, ...]:
    start = now_ms // DAY_MS * DAY_MS
    return (start, start + DAY_MS) * 3  # Day, week and month alike: only "day" rules are drawn.


class Schedule:
    """One key's checks, with the reference's state of each rule beside the script's."""

    def __init__(self, number: int, algorithm: str, rng: random.Random, sha: str = SCRIPT_SHA) -> None:
        self.algorithm, self.rng, self.sha = algorithm, rng, sha
        tag, prefix = f"t{number}", f"p{number}"
        self.keys = [
            policy_key(tag, prefix),
            generation_key(tag, prefix),
            counter_base(tag, prefix, READ),
            counter_base(tag, POOL, READ),
            ledger_key(tag),
        ]
        self.state: dict[str, object] = {}  # The reference's state per counter key.
        self.log: list[tuple[bool, int, Verdict | str]] = []
        self.rule_changes = -1
        self.change_rules()

    def change_rules(self) -> None:
        """The next check installs new rules: rings resize, counters and quotas keep their counts."""
        drawn = [
            Rule(self.rng.choice(COUNTS), window=1, algorithm=self.algorithm),
            Rule(self.rng.choice(COUNTS), window=2, algorithm=self.rng.choice([EXACT, COUNTER])),
            Rule(self.rng.choice(COUNTS), calendar=DAY),
            Rule(self.rng.choice(COUNTS), window=1, scope=ACCOUNT, algorithm=self.algorithm),
        ]
        self.rules = tuple(self.rng.sample(drawn, self.rng.choice((1, 1, 2, 3))))
        policy = Policy(ACTIVE, rules=self.rules)
        # Installed by the check that carries it: no eviction ever set this key's generation, so it is "".
        self.install: tuple[str | int, ...] = ("", 60_000, *flatten(policy.to_fields()))
        self.rule_changes += 1

    def key(self, rule: Rule, start: int) -> str:
        base = self.keys[3] if rule.scope == ACCOUNT else self.keys[2]
        return counter_key(base, rule.name, kind(rule), start if rule.calendar else None)

    def step(self, client: Redis) -> None:
        if self.rng.random() < RULE_CHANGES:
            self.change_rules()
        charge, cost = self.rng.random() < 0.75, self.rng.choice(COSTS)
        bounds = day_bounds(round(time.time() * 1000))
        args = (READ, "1" if charge else "0", cost, *bounds, LEDGER_OFF, *self.install)
        self.install = ()
        reply = client.evalsha(self.sha, len(self.keys), *self.keys, *args)
        try:
            verdict = RedisStorage._outcome(reply, cost, bounds)
        except CostExceedsLimit as exc:
            self.log.append((charge, cost, str(exc)))
            assert cost > min(rule.count for rule in self.rules), self.log
            return
        assert isinstance(verdict, Verdict)
        self.log.append((charge, cost, verdict))
        now = round(verdict.decisions[0].now * 1000)
        # Every rule looks first; only if all admit, and the request counts, is each charged.
        expected = [self.decide(rule, now, bounds, cost, charge=False, client=client) for rule in self.rules]
        if charge and all(decision.allowed for decision in expected):
            expected = [
                self.decide(rule, now, bounds, cost, charge=True, client=client) for rule in self.rules
            ]
        assert verdict.decisions == tuple(expected), self.log

    def decide(
        self, rule: Rule, now: int, bounds: tuple[int, ...], cost: int, *, charge: bool, client: Redis
    ) -> Decision:
        start, end = bounds[0], bounds[1]
        key = self.key(rule, start)
        if rule.calendar:
            used = int(self.state.get(key, 0))  # type: ignore[call-overload]
            decision = quota_decide(used, now, start, end, rule.count, charge=charge, cost=cost)
            if charge and decision.allowed:
                self.state[key] = used + cost
        elif rule.algorithm == EXACT:
            stamps = self.state.get(key, ())
            written = charge and len([t for t in stamps if now - t < rule.window * 1000]) + cost <= rule.count  # type: ignore[attr-defined]
            stamp = self.newest_stamp(client, key) if written else None
            assert stamp is None or stamp - now in (0, 1)  # The clock rounded up.
            decision, self.state[key] = exact_decide(
                stamps,
                now,
                Rate(rule.count, rule.window),
                charge=charge,
                stamp=stamp,
                cost=cost,  # type: ignore[arg-type]
            )
        else:
            decision = self.counter(key, rule, now, cost, charge)
        return decision._replace(policy=rule.name)

    def counter(self, key: str, rule: Rule, now: int, cost: int, charge: bool) -> Decision:
        rate = Rate(rule.count, rule.window)
        index = now // (rate.window * 1000)
        counted_at, current, previous = self.state.get(key) or (index - 2, 0, 0)  # type: ignore[misc]
        if counted_at != index:  # The next window: the current count becomes the previous one.
            current, previous = 0, current if counted_at == index - 1 else 0
        expected = counter_decide(previous, current, now, rate, charge=charge, cost=cost)
        if charge and expected.allowed:
            self.state[key] = (index, current + cost, previous)
        return expected

    @staticmethod
    def newest_stamp(client: Redis, key: str) -> int:
        ring = client.get(key)
        assert ring is not None
        head, size = (int.from_bytes(ring[i * SLOT : (i + 1) * SLOT], "big") for i in (0, 1))
        newest = HEADER + (head - 1) % size  # An admission writes from the head's slot, then advances it.
        return int.from_bytes(ring[newest * SLOT : (newest + 1) * SLOT], "big")


#: The script with every exact ring read slot by slot, as rings above exact.lua's EXACT_WHOLE are.
WHOLE = b"local EXACT_WHOLE = 64\n"
BY_SLOT = SCRIPT.replace(WHOLE, b"local EXACT_WHOLE = 0\n")


@pytest.fixture
def client(redis_server):
    client = Redis.from_url(redis_server.url)
    client.flushdb()
    client.script_load(SCRIPT)
    yield client
    client.close()


def test_rings_are_read_slot_by_slot_above_a_size():
    assert SCRIPT.count(WHOLE) == 1
    assert max(COUNTS) <= 64  # This test's rings are read whole, unless the script is BY_SLOT.


@pytest.mark.parametrize(("algorithm", "reads"), [(EXACT, "whole"), (COUNTER, "whole"), (EXACT, "by slot")])
def test_the_script_decides_as_the_reference(client, algorithm, reads):
    sha = client.script_load(BY_SLOT if reads == "by slot" else SCRIPT)
    seed = random.randrange(2**32)
    print(f"seed {seed}")  # Shown if the test fails: random.Random(seed) replays its plan.
    rng = random.Random(seed)
    schedules = [Schedule(n, algorithm, random.Random(rng.random()), sha) for n in range(SCHEDULES)]
    # Each schedule's steps at its own random gaps, all interleaved in time order:
    # the sleeps that let windows pass are shared by every schedule.
    due = [(0.0, n) for n in range(SCHEDULES)]
    start = time.monotonic()
    while due:
        at, n = heapq.heappop(due)
        time.sleep(max(0.0, start + at - time.monotonic()))
        schedules[n].step(client)
        if len(schedules[n].log) < STEPS:
            heapq.heappush(due, (at + rng.choice(GAPS) / 1000, n))
    verdicts = [(c, cost, v) for s in schedules for c, cost, v in s.log if isinstance(v, Verdict)]
    decisions = [(charge, v.allowed, len(v.decisions) > 1, cost > 1) for charge, cost, v in verdicts]
    print(f"{len(decisions)} verdicts (counted, admitted, several rules, cost): {Counter(decisions)}")
    assert sum(len(s.log) for s in schedules) == SCHEDULES * STEPS
    assert sum(schedule.rule_changes for schedule in schedules) > SCHEDULES // 2
    # Admissions and refusals, with and without a count, by one rule and by several, with costs above 1.
    assert set(decisions) >= {
        (charge, allowed, several, costly)
        for charge in (True, False)
        for allowed in (True, False)
        for several in (True, False)
        for costly in (True, False)
    }
    # A refusal by one rule while another admitted: the admitting rule was not charged (checked above).
    assert any(not v.allowed and any(d.allowed for d in v.decisions) for charge, _, v in verdicts if charge)
    assert any(isinstance(v, str) for s in schedules for _, _, v in s.log)  # Costs beyond a rule's count.
    assert any(d.quota for _, _, v in verdicts for d in v.decisions)


def test_an_admission_reads_each_rule_once(client):
    """The script decides on every rule before it charges any, and charges from what it read."""
    rules = (
        Rule(10, window=1, algorithm=EXACT),  # A ring read whole.
        Rule(100, window=10, algorithm=EXACT),  # A ring read by its header and slots.
        Rule(1000, window=60, algorithm=COUNTER),
        Rule(100_000, calendar=DAY),
    )
    schedule = Schedule(0, EXACT, random.Random(0))
    schedule.rules = rules
    schedule.install = ("", 60_000, *flatten(Policy(ACTIVE, rules=rules).to_fields()))
    bounds = day_bounds(round(time.time() * 1000))
    for hit in range(3):
        install, schedule.install = schedule.install, ()
        client.config_resetstat()
        args = (READ, "1", 1, *bounds, LEDGER_OFF, *install)
        reply = client.evalsha(SCRIPT_SHA, len(schedule.keys), *schedule.keys, *args)
        stats = client.info("stats")
        verdict = RedisStorage._outcome(reply, 1, bounds)
        assert isinstance(verdict, Verdict)
        assert verdict.allowed
        assert [d.remaining for d in verdict.decisions] == [r.count - hit - 1 for r in rules]
    # Every read of a key counts as a hit or a miss: the policy hash, then each rule's counter once.
    assert stats["keyspace_hits"] + stats["keyspace_misses"] == 1 + len(rules)
