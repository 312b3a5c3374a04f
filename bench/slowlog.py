"""How long one script call blocks Redis when a tier's limit changes, read from Redis's SLOWLOG.

Run ``python bench/slowlog.py`` from the repository root (``--limits 1000 100000``
to choose). It starts its own redis-server and a temporary SQLite database.
For each limit it fills one key of an exact-mode tier to the limit (pipelined
checks on the script's own path), then shrinks the tier's limit by 10%, makes
one check, grows it back, makes one more, and prints the slowest script call
(``EVALSHA``) that Redis recorded for each step: the fill (calls over 0.5 ms),
the check after the shrink, the check after the grow. SLOWLOG times the command inside Redis, the
time every other client waits; a check whose call outlives the client's 0.1 s
socket timeout fails (then fail-open admits it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

from run import new_key, setup_django, start_redis

BATCH = 5000


def slow_calls(client: Any) -> list[int]:
    """Microseconds of each EVALSHA in the slow log, slowest first; the log is then reset."""
    entries = client.slowlog_get(1024)
    client.slowlog_reset()
    return sorted((e["duration"] for e in entries if e["command"].startswith(b"EVALSHA")), reverse=True)


def fill(storage: Any, key: tuple[str, int], count: int) -> None:
    """``count`` admitting checks, pipelined ``BATCH`` at a time on one connection."""
    from ratelimit_tiers.names import account_tag

    prefix, account = key
    storage.hit(prefix, account, "read")  # Installs the policy.
    bounds = storage.calendar.bounds()
    command = storage._check_call(prefix, account_tag(account), "read", 1, True, bounds).command
    pool = storage.client().connection_pool
    connection = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": 30})
    left = count - 1
    while left > 0:
        batch = min(BATCH, left)
        connection.send_packed_command([command] * batch)
        for _ in range(batch):
            connection.read_response(disable_decoding=True)
        left -= batch
    connection.disconnect()


def check(storage: Any, key: tuple[str, int]) -> str:
    from ratelimit_tiers.exceptions import StorageUnavailable

    try:
        decision = storage.hit(*key, "read").decision
    except StorageUnavailable as exc:
        return f"failed ({exc})"
    return f"{'admitted' if decision.allowed else 'refused'}, {decision.remaining} left"


def measure(limit: int, url: str) -> list[str]:
    from redis import Redis

    from ratelimit_tiers.models import Tier
    from ratelimit_tiers.storage import get_storage

    storage = get_storage()
    client = Redis.from_url(url, socket_timeout=60)  # Waits for a slow script; the storage's does not.
    key, _raw = new_key(limit, "exact")
    rule = Tier.objects.get(name=f"bench-{limit}-exact").rules.get()
    client.config_set("slowlog-max-len", 1024)
    client.config_set("slowlog-log-slower-than", 500)  # The fill's slow calls only.
    client.slowlog_reset()
    started = time.monotonic()
    fill(storage, key, limit)
    filled = time.monotonic() - started
    fill_us = slow_calls(client)
    full = check(storage, key)
    client.config_set("slowlog-log-slower-than", 0)
    rows = []
    for step, new_limit in (("shrink", limit - limit // 10), ("grow", limit)):
        rule.count = new_limit
        rule.save()  # Evicts the policy: the next check installs the new limit.
        client.slowlog_reset()
        outcome = check(storage, key)
        micros = max(slow_calls(client), default=0)
        rows.append(f"| {limit:,} | {step} to {new_limit:,} | {micros / 1000:.2f} | {outcome} |")
    keys = client.keys(f"*{key[0]}*read*")
    sizes = ", ".join(
        f"{k.decode().rsplit(':', 1)[-1]} {client.memory_usage(k, samples=0):,} B" for k in keys
    )
    rows.insert(
        0,
        f"| {limit:,} | fill ({filled:.1f} s; then: {full}) | {max(fill_us, default=0) / 1000:.2f} "
        f"({len(fill_us)} calls over 0.5 ms: {', '.join(f'{u / 1000:.1f}' for u in fill_us[:5])}) "
        f"| {sizes} |",
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limits", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        process, url = start_redis(directory)
        try:
            setup_django(url, f"{directory}/db.sqlite3")
            print("| limit | step | slowest script call (ms) | outcome of the check / keys |")
            print("|---|---|---|---|")
            for limit in options.limits:
                for row in measure(limit, url):
                    print(row, flush=True)
        finally:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
