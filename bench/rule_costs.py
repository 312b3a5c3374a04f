"""What each extra rule of a check costs inside Redis: its state, or only being a rule.

Run ``python bench/rule_costs.py`` from the repository root (``--rounds N``). It
starts its own redis-server and a temporary SQLite database, makes 1,000 keys
of a one-rule tier (``1000/min``) and 1,000 of the issue's three-rule tier
(``10/s``, ``1000/min``, ``100000/day``), and sends the check script's calls
for them in pipelines, so that only Redis's side is timed: the script's own
µs per call, from ``INFO commandstats`` (``usec_per_call`` of ``EVALSHA``).

Besides the check script as it is, it runs ablations of it on the three-rule
keys: the ``10/s`` ring's state (its reads and writes), the quota's, or both,
replaced by a constant answer. The rules are still parsed, decided in turn and
reported, so what an ablation saves is what that rule's state costs, and the
"both" row is what two extra rules would cost with no state at all. The
scripts take turns every 100 keys (in alternating order), each timed by
the growth of Redis's own count of script µs; medians over the rounds (the
first, which creates every counter, left out), and a script's cost over the
one-rule script's taken round by round, which cancels the machine's drift.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

from run import ONE_RULE, THREE_RULES, benchmark_django, rule_keys, table

KEYS = 1000
#: Calls per pipeline, and per turn of a script.
PIPELINE = 100

#: Where hit.lua decides a rule, and where it charges one it decided without charging.
CHECK = "local function check(rule, charged)\n"
CHARGE = "local function charge_rule(rule, looked)\n"


def without_state(script: str, count: int) -> str:
    """``script`` with the state of the rules of ``count`` neither read nor written: a constant admission."""
    stubbed = script.replace(
        CHECK, f"{CHECK}  if rule[4] == {count} then return 1, 1, 1, 0, 0, 0, 0, 0 end\n"
    )
    stubbed = stubbed.replace(CHARGE, f"{CHARGE}  if rule[4] == {count} then return 1, 1, 1 end\n")
    if stubbed.count(f"if rule[4] == {count} then") != 2:
        raise RuntimeError("hit.lua changed: the ablation no longer applies")
    return stubbed


#: The scripts compared: on which keys, and how the check script is changed.
SCRIPTS: dict[str, tuple[str, Callable[[str], str]]] = {
    "1 rule (1000/min)": ("one", lambda script: script),
    "3 rules (+ 10/s + 100000/day)": ("three", lambda script: script),
    "3 rules, the 10/s ring's state left out": ("three", lambda script: without_state(script, 10)),
    "3 rules, the quota's state left out": ("three", lambda script: without_state(script, 100000)),
    "3 rules, both left out": ("three", lambda script: without_state(without_state(script, 10), 100000)),
}


def script_usec(client: Any) -> float:
    """The µs that Redis has spent running scripts by SHA since its statistics were reset."""
    return float(client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0))


def timed(client: Any, sha: str, calls: list[tuple[tuple[str, ...], tuple[Any, ...]]]) -> float:
    """The µs Redis spent running ``calls`` of script ``sha``, pipelined; each must be admitted."""
    before = script_usec(client)
    pipe = client.pipeline(transaction=False)
    for keys, args in calls:
        pipe.evalsha(sha, len(keys), *keys, *args)
    for reply in pipe.execute():
        if not reply.startswith(b"1 "):
            raise RuntimeError(f"a rule-cost benchmark check was not admitted: {reply[:40]!r}")
    return script_usec(client) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds (each script, each key, once a round)")
    options = parser.parse_args()
    with benchmark_django():
        from django_redis import get_redis_connection

        from ratelimit_tiers.names import account_tag
        from ratelimit_tiers.storage import get_storage
        from ratelimit_tiers.storage.redis import SCRIPT

        storage, client = get_storage(), get_redis_connection("default")
        bounds = storage.calendar.bounds()
        calls = {}
        for name, rates in (("one", ONE_RULE), ("three", THREE_RULES)):
            made = (
                storage._build_check_call(key.prefix, account_tag(key.account), "read", 1, True, bounds)
                for key in rule_keys(rates, KEYS)
            )
            calls[name] = [(call.keys, call.args) for call in made]
        shas = {label: client.script_load(change(SCRIPT.decode())) for label, (_, change) in SCRIPTS.items()}
        found: dict[str, list[float]] = {label: [] for label in SCRIPTS}
        client.config_resetstat()
        for round_ in range(options.rounds + 1):
            spent = dict.fromkeys(SCRIPTS, 0.0)
            for block, start in enumerate(range(0, KEYS, PIPELINE)):
                for label in SCRIPTS if (round_ + block) % 2 else reversed(SCRIPTS):
                    keys = SCRIPTS[label][0]
                    spent[label] += timed(client, shas[label], calls[keys][start : start + PIPELINE])
            if round_:
                for label, usec in spent.items():
                    found[label].append(usec / KEYS)
    one = found[next(iter(SCRIPTS))]
    rows = []
    for label, times in found.items():
        more = [usec - alone for usec, alone in zip(times, one, strict=True)]
        rows.append(
            [
                label,
                f"{statistics.median(times):.1f}",
                f"{statistics.median(more):+.1f} ({min(more):+.1f} to {max(more):+.1f})",
            ]
        )
    print(
        f"The check script inside Redis, {KEYS:,} keys a script and round, {options.rounds} rounds "
        "(INFO commandstats; medians, and of each round's difference from the one-rule script):\n"
    )
    print(table(["script", "µs per call", "µs more than 1 rule (range of rounds)"], rows))


if __name__ == "__main__":
    main()
