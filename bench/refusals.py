"""Benchmark: 429s for an exhausted key, and for bad keys, against admitted requests, in one process.

Run ``python bench/refusals.py`` from the repository root (``--rounds``,
``--requests``). It starts its own redis-server and a temporary SQLite
database (as ``bench/run.py`` does) and sends whole requests through Django's
WSGI handler, as a WSGI server calls it, to the testproject's ``/api/items/``
with ``DEBUG`` off (middleware, authentication, throttle, headers; the view
runs only when admitted; no HTTP). Rounds alternate: admitted requests on a
key with a huge limit, 429s on an exhausted key with refusals served locally
(the default), the same with ``RATELIMIT_TIERS_LOCAL_REFUSAL_SECONDS = 0``
(every 429 asks the store), and 429s for an unknown key over
``INVALID_KEY_RATE``. Prints requests per second (median of the rounds), the
median of per-round ratios to the admitted rate, and ``EVALSHA`` per request
from the server's ``INFO commandstats``.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from run import setup_django, start_redis

UNKNOWN = "Api-Key AAAAAAAAAAAA." + "a" * 43
Batch = Callable[[], tuple[float, int]]


def evalshas(client: object) -> int:
    stats = client.info("commandstats")  # type: ignore[attr-defined]
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=1000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        redis, url = start_redis(directory)
        try:
            os.environ["DJANGO_DEBUG"] = "0"
            setup_django(url, f"{directory}/db.sqlite3")
            logging.getLogger("django.request").setLevel(logging.ERROR)  # No "Too Many Requests" lines.
            run(options.rounds, options.requests, url)
        finally:
            redis.kill()


def get(handler: Callable[..., object], header: str) -> int:
    """One GET through the WSGI handler, as a WSGI server sends it; its status code."""
    statuses: list[str] = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/items/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_AUTHORIZATION": header,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
    }
    body = handler(environ, lambda status, headers: statuses.append(status))
    b"".join(body)  # type: ignore[call-overload]
    body.close()  # type: ignore[attr-defined]
    return int(statuses[0][:3])


def run(rounds: int, requests: int, url: str) -> None:
    import django
    import redis as redis_py
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    from ratelimit_tiers.models import Account, APIKey, Tier

    handler = WSGIHandler()
    # Day-long windows: the exhausted key and the bad-key bucket stay refused for the whole run.
    override_settings(RATELIMIT_TIERS_INVALID_KEY_RATE="60/day").enable()
    daily = Tier.objects.create(name="bench-daily", limit=10**9, window_seconds=86400)

    def key_header(name: str, override: int) -> str:
        account = Account.objects.create(name=name, tier=daily, limit_override=override)
        return "Api-Key " + APIKey.objects.create_key(account=account, name=name)[1]

    admitted, exhausted = key_header("admitted", 10**9), key_header("exhausted", 1)
    assert get(handler, exhausted) == 200
    for _ in range(61):  # Past INVALID_KEY_RATE for 127.0.0.1.
        get(handler, UNKNOWN)
    store = redis_py.Redis.from_url(url)

    def batch(header: str, status: int) -> Batch:
        def go() -> tuple[float, int]:
            before, started = evalshas(store), time.perf_counter()
            for _ in range(requests):
                assert get(handler, header) == status
            return requests / (time.perf_counter() - started), evalshas(store) - before

        return go

    def no_notes(go: Batch) -> Batch:
        def wrapped() -> tuple[float, int]:
            with override_settings(RATELIMIT_TIERS_LOCAL_REFUSAL_SECONDS=0):
                return go()

        return wrapped

    rows = {
        "admitted (200)": batch(admitted, 200),
        "exhausted key, 429 served locally": batch(exhausted, 429),
        "exhausted key, 429 from the store (LOCAL_REFUSAL_SECONDS = 0)": no_notes(batch(exhausted, 429)),
        "unknown key over INVALID_KEY_RATE, 429 served locally": batch(UNKNOWN, 429),
    }
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in rows}
    for go in rows.values():
        go()  # Warm-up.
    for _ in range(rounds):
        for name, go in rows.items():
            results[name].append(go())
    print(
        f"Python {sys.version.split()[0]}, Django {django.get_version()}, redis-py {redis_py.__version__}, "
        f"hiredis: {'yes' if _has_hiredis() else 'no'}; {rounds} rounds of {requests} requests, in-process"
    )
    print("| Requests | per second (median) | x admitted (median of rounds) | EVALSHA per request |")
    print("|---|---|---|---|")
    base = [rate for rate, _ in results["admitted (200)"]]
    for name, samples in results.items():
        rates = [rate for rate, _ in samples]
        ratio = statistics.median(r / b for r, b in zip(rates, base, strict=True))
        commands = sum(c for _, c in samples) / (rounds * requests)
        print(f"| {name} | {statistics.median(rates):,.0f} | {ratio:.2f} | {commands:.4f} |")


def _has_hiredis() -> bool:
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
