"""The Lua script against its reference, ``algorithms.py``, on a real redis-server: a differential test.

Random schedules of hits and looks, each on a key of its own with a small
limit (which now and then changes) and a 1 s window, run interleaved so that
their waits overlap. The script reports the ``now`` it read from the Redis
server's clock; the reference decides with that same ``now`` (and, for an
exact-mode admission, the stamp the script wrote, read back from its ring),
and the two must agree on every decision: allowed, limit, window, remaining
and reset.
"""

from __future__ import annotations

import heapq
import random
import time
from collections import Counter

import pytest
from redis import Redis

from ratelimit_tiers.algorithms import COUNTER, EXACT, READ, Decision, Rate, counter_decide, exact_decide
from ratelimit_tiers.names import ACTIVE, bucket_key, generation_key, policy_key
from ratelimit_tiers.policies import Policy
from ratelimit_tiers.storage.base import Verdict
from ratelimit_tiers.storage.redis import SCRIPT, SCRIPT_SHA, RedisStorage, flatten

pytestmark = pytest.mark.redis

SCHEDULES = 200  # Per algorithm.
STEPS = 12
#: The chance that a step first installs a new limit.
LIMIT_CHANGES = 0.1
LIMITS = (0, 1, 2, 2, 3, 3, 4, 5, 8)
#: Milliseconds between two steps of a schedule: bursts in one millisecond, and gaps across the window.
GAPS = (0, 0, 0, 1, 2, 5, 20, 100, 300, 500, 700, 999, 1000, 1001, 1500)
#: Bytes of one u48 slot of the exact ring, and slots in its header (see exact.lua).
SLOT, HEADER = 6, 5


class Schedule:
    """One key's checks, with the reference's state beside the script's."""

    def __init__(self, number: int, algorithm: str, rng: random.Random) -> None:
        self.algorithm, self.rng = algorithm, rng
        prefix = f"diff{number}"
        self.keys = [
            policy_key(prefix),
            bucket_key(prefix, READ, EXACT),
            bucket_key(prefix, READ, COUNTER),
            generation_key(prefix),
        ]
        self.stamps: tuple[int, ...] = ()  # The exact reference's state.
        self.counted: tuple[int, int, int] | None = None  # The counter's: (window index, current, previous).
        self.log: list[tuple[bool, Decision]] = []
        self.limit_changes = -1
        self.change_limit()

    def change_limit(self) -> None:
        """The next check installs a new limit: the ring resizes, the counter keeps its counts."""
        self.rate = Rate(self.rng.choice(LIMITS), 1)
        policy = Policy(
            ACTIVE, window=self.rate.window, algorithm=self.algorithm, limits={READ: self.rate.limit}
        )
        # Installed by the check that carries it: no eviction ever set this key's generation, so it is "".
        self.install: tuple[str | int | float, ...] = ("", *flatten(policy.to_fields()))
        self.limit_changes += 1

    def step(self, client: Redis) -> None:
        if self.rng.random() < LIMIT_CHANGES:
            self.change_limit()
        charge = self.rng.random() < 0.75
        args = (READ, "1" if charge else "0", 60, *self.install)
        self.install = ()
        verdict = RedisStorage._outcome(client.evalsha(SCRIPT_SHA, len(self.keys), *self.keys, *args))
        assert isinstance(verdict, Verdict)
        decision = verdict.decision
        now = round(decision.now * 1000)
        if self.algorithm == EXACT:
            stamp = self.newest_stamp(client) if charge and decision.allowed else None
            assert stamp is None or stamp - now in (0, 1)  # The clock rounded up.
            expected, self.stamps = exact_decide(self.stamps, now, self.rate, charge=charge, stamp=stamp)
        else:
            expected = self.counter(now, charge)
        self.log.append((charge, decision))
        assert decision == expected, self.log

    def counter(self, now: int, charge: bool) -> Decision:
        index = now // (self.rate.window * 1000)
        counted_at, current, previous = self.counted or (index - 2, 0, 0)  # Nothing counted yet: long ago.
        if counted_at != index:  # The next window: the current count becomes the previous one.
            current, previous = 0, current if counted_at == index - 1 else 0
        expected = counter_decide(previous, current, now, self.rate, charge=charge)
        if charge and expected.allowed:
            self.counted = (index, current + 1, previous)
        return expected

    def newest_stamp(self, client: Redis) -> int:
        ring = client.get(self.keys[1])
        assert ring is not None
        head, size = (int.from_bytes(ring[i * SLOT : (i + 1) * SLOT], "big") for i in (0, 1))
        newest = HEADER + (head - 1) % size  # An admission writes the head's slot, then advances it.
        return int.from_bytes(ring[newest * SLOT : (newest + 1) * SLOT], "big")


@pytest.fixture
def client(redis_server):
    client = Redis.from_url(redis_server.url)
    client.flushdb()
    client.script_load(SCRIPT)
    yield client
    client.close()


@pytest.mark.parametrize("algorithm", [EXACT, COUNTER])
def test_the_script_decides_as_the_reference(client, algorithm):
    seed = random.randrange(2**32)
    print(f"seed {seed}")  # Shown if the test fails: random.Random(seed) replays its plan.
    rng = random.Random(seed)
    schedules = [Schedule(n, algorithm, random.Random(rng.random())) for n in range(SCHEDULES)]
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
    decisions = [(charge, d.allowed, d.remaining < d.limit) for s in schedules for charge, d in s.log]
    print(f"{len(decisions)} decisions (counted, admitted): {Counter(d[:2] for d in decisions)}")
    assert len(decisions) == SCHEDULES * STEPS
    assert sum(schedule.limit_changes for schedule in schedules) > SCHEDULES // 2
    # Admissions and refusals, with and without a count, on full and on empty keys.
    assert set(decisions) >= {
        (True, True, True),
        (True, False, True),
        (False, True, True),
        (False, False, True),
    }
    assert (False, True, False) in decisions  # A look at an empty key: nothing to reset.
