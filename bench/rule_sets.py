"""Where a check against several rules spends its time: inside Redis's script, or in the client.

Run ``python bench/rule_sets.py`` from the repository root (``--rounds N``). It
starts its own redis-server and a temporary SQLite database, makes 2,000 keys
of a tier for each rule set below, and checks them (``RedisStorage.hit``, every
check admitted) in rounds of 1,000 keys a set, the sets taking turns. For each
set it prints the cost of a check in the client (wall time, µs) and the
script's own time inside Redis (``INFO commandstats``: ``usec_per_call`` of
``EVALSHA``), then their differences from the one-rule set in the same round:
medians over the rounds (the first, which creates every counter, left out).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from run import THREE_RULES, RuleKey, benchmark_django, rule_keys, table

#: The rule sets compared: one rule, then that rule with two more of one kind or another.
SETS = {
    "1000/min": ("1000/min",),
    "+ 10/s + 100000/day (the issue's)": THREE_RULES,
    "+ 100000/day + 1000000/month (quotas)": ("1000/min", "100000/day", "1000000/month"),
    "+ 10/s + 20/2s (small rings)": ("10/s", "1000/min", "20/2s"),
    "+ 5000/h + 10000/2h (large rings)": ("1000/min", "5000/hour", "10000/2h"),
}
KEYS = 1000


def measure(storage: Any, client: Any, keys: list[RuleKey]) -> tuple[float, float]:
    """Client µs per check (wall) and the script's µs per call inside Redis, over ``keys``."""
    client.config_resetstat()
    start = time.perf_counter()
    for key in keys:
        if not storage.hit(key.prefix, key.account, "read").allowed:
            raise RuntimeError("a rule-set benchmark check was refused")
    wall = (time.perf_counter() - start) / len(keys) * 1e6
    return wall, client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=13, help="rounds (each key is used every other one)")
    options = parser.parse_args()
    with benchmark_django():
        from django_redis import get_redis_connection

        from ratelimit_tiers.storage import get_storage

        storage, client = get_storage(), get_redis_connection("default")
        keys = {name: rule_keys(rates, 2 * KEYS) for name, rates in SETS.items()}
        found: dict[str, list[tuple[float, float]]] = {name: [] for name in SETS}
        for round_ in range(options.rounds + 1):
            half = (round_ % 2) * KEYS
            for name, set_keys in keys.items():
                measured = measure(storage, client, set_keys[half : half + KEYS])
                if round_:
                    found[name].append(measured)
        one = found["1000/min"]
        rows = []
        for name, rounds in found.items():

            def median(pick: Any, rounds: list[tuple[float, float]] = rounds, places: int = 1) -> str:
                middle = statistics.median(pick(x, b) for x, b in zip(rounds, one, strict=True))
                return f"{middle:.{places}f}"

            rows.append(
                [
                    name,
                    median(lambda x, b: x[0]),
                    median(lambda x, b: x[1]),
                    median(lambda x, b: x[0] - b[0]),
                    median(lambda x, b: x[1] - b[1]),
                    median(lambda x, b: x[0] / b[0], places=2) + "x",
                ]
            )
        print(
            f"Checks against each rule set ({KEYS} keys a round, {options.rounds} rounds, medians; "
            "in Redis: the script's own time from INFO commandstats):\n"
        )
        header = ["rules", "client µs", "in Redis µs", "client +µs", "in Redis +µs", "÷ one rule"]
        print(table(header, rows))


if __name__ == "__main__":
    main()
