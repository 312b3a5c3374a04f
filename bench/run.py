"""Benchmark: our throttle vs DRF's throttles vs ``limits`` vs the EVALSHA floor, per check and end to end.

Run ``python bench/run.py`` from the repository root (``--quick`` for a smoke
run, ``--only e2e,flood`` for some sections). It starts its own redis-server
on a free port and a temporary SQLite database, and prints Markdown tables;
see bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from load import (
    CLIENTS,
    SETTINGS,
    WORKERS,
    Requests,
    Row,
    Server,
    alternate,
    clients,
    cpu_seconds,
    free_port,
    per_response,
    request,
    same,
    send,
    serving,
    spread,
    status_mix,
    warm,
    write_settings,
)

RATES = (60, 1000, 5000)
FULL = 0.9  # How full a key is while it is measured.


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*args, "--dir", directory], stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def setup_django(redis_url: str, directory: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    os.environ["REDIS_URL"] = redis_url
    os.environ["DJANGO_DB"] = str(Path(directory, "db.sqlite3"))
    sys.path[:0] = write_settings(directory)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    # The throttle logs every refusal, and Django every 4xx: the exactness runs and floods refuse thousands.
    logging.getLogger("ratelimit_tiers").setLevel(logging.WARNING)
    logging.getLogger("django.request").setLevel(logging.ERROR)


@contextmanager
def benchmark_django() -> Iterator[tuple[str, str]]:
    """Its own redis-server and Django set up on it, in a temporary directory: ``(redis URL, directory)``."""
    with tempfile.TemporaryDirectory() as directory:
        redis, url = start_redis(directory)
        try:
            setup_django(url, directory)
            yield url, directory
        finally:
            redis.kill()
            redis.wait()


# --- The contenders. Each ``new_<name>(limit)`` returns a check on a fresh key
# that is already FULL; the harness uses each key for at most 10% of its limit.

_serial = iter(range(10**9))


def new_key(limit: int, algorithm: str, window: int = 60) -> tuple[tuple[str, int], str]:
    """A new key of a tier of one rule, ``limit`` per ``window`` s: ``((prefix, account id), raw key)``."""
    from ratelimit_tiers.models import Account, APIKey, LimitRule, Tier

    tier, created = Tier.objects.get_or_create(name=f"bench-{limit}-{window}-{algorithm}")
    if created:
        LimitRule.objects.create(tier=tier, count=limit, window_seconds=window, algorithm=algorithm)
    account = Account.objects.create(name=f"bench-{next(_serial)}", tier=tier)
    key, raw = APIKey.objects.create_key(account=account, name="bench")
    return (key.prefix, account.pk), raw


def new_full_key(limit: int, algorithm: str) -> tuple[tuple[str, int], str]:
    """A new key whose read bucket is FULL, filled through our storage."""
    from ratelimit_tiers.storage import get_storage

    key, raw = new_key(limit, algorithm)
    storage = get_storage()
    for _ in range(int(limit * FULL)):
        storage.hit(*key, "read")
    return key, raw


def prepared_request(raw: str) -> tuple[object, object]:
    """A DRF request authenticated by our APIKeyAuthentication, as the view would see it."""
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from ratelimit_tiers.authentication import APIKeyAuthentication
    from testproject.views import ItemViewSet

    view = ItemViewSet()
    request = Request(
        APIRequestFactory().get("/api/items/", HTTP_AUTHORIZATION=f"Api-Key {raw}"),
        authenticators=[APIKeyAuthentication()],
        parser_context={"view": view},
    )
    assert request.auth is not None
    return request, view


def make_ours(algorithm: str) -> Callable[[int], Callable[[], object]]:
    def new(limit: int) -> Callable[[], object]:
        from ratelimit_tiers.throttling import TierRateThrottle

        _key, raw = new_full_key(limit, algorithm)
        request, view = prepared_request(raw)
        throttle = TierRateThrottle()
        return lambda: throttle.allow_request(request, view)  # type: ignore[arg-type]

    return new


def make_script_only(algorithm: str) -> Callable[[int], Callable[[], object]]:
    """Our script call alone, sent as RedisStorage sends it: no throttle, no parsing."""

    def new(limit: int) -> Callable[[], object]:
        from ratelimit_tiers.names import account_tag
        from ratelimit_tiers.storage import get_storage

        (prefix, account), _raw = new_full_key(limit, algorithm)
        storage = get_storage()
        bounds = storage.calendar.bounds()
        call = storage._check_call(prefix, account_tag(account), "read", 1, True, bounds)  # type: ignore[attr-defined]
        send = storage.transport.send  # type: ignore[attr-defined]
        return lambda: send(call.command)[:1] == b"1"

    return new


def drf_throttle(limit: int, ident: str) -> object:
    from rest_framework.throttling import SimpleRateThrottle

    class Throttle(SimpleRateThrottle):
        rate = f"{limit}/min"

        def get_cache_key(self, request: object, view: object) -> str:
            return f"drf-bench-{ident}"

    return Throttle()


def new_drf(limit: int) -> Callable[[], object]:
    from django.core.cache import cache

    ident = str(next(_serial))
    now = time.time()
    # DRF's own state: a list of admission times, newest first.
    cache.set(f"drf-bench-{ident}", [now - i * 50 / limit for i in range(int(limit * FULL))], 60)
    throttle = drf_throttle(limit, ident)
    return lambda: throttle.allow_request(None, None)  # type: ignore[attr-defined]


def limits_limiter(kind: str, url: str) -> tuple[object, object]:
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

    storage = RedisStorage(url)
    cls = MovingWindowRateLimiter if kind == "moving" else SlidingWindowCounterRateLimiter
    return storage, cls(storage)


def make_limits(kind: str, url: str) -> Callable[[int], Callable[[], object]]:
    _storage, limiter = limits_limiter(kind, url)

    def new(limit: int) -> Callable[[], object]:
        from limits import RateLimitItemPerMinute

        item, ident = RateLimitItemPerMinute(limit), f"limits-{next(_serial)}"
        for _ in range(int(limit * FULL)):
            limiter.hit(item, ident)  # type: ignore[attr-defined]
        return lambda: limiter.hit(item, ident)  # type: ignore[attr-defined]

    return new


def make_floor() -> Callable[[int], Callable[[], object]]:
    from django_redis import get_redis_connection

    client = get_redis_connection("default")
    sha = client.script_load("return 1")
    return lambda limit: lambda: client.evalsha(sha, 0)


def make_floor_as_sent_by_ours() -> Callable[[int], Callable[[], object]]:
    """The floor's EVALSHA, pre-encoded and sent on a pooled connection as RedisStorage sends."""
    from django_redis import get_redis_connection

    from ratelimit_tiers.storage import get_storage
    from ratelimit_tiers.storage.transport import encode_command

    # A bulk-string reply, as our script's: the kept connections read nothing else (transport.read_bulk).
    sha = get_redis_connection("default").script_load("return '1'")
    command, send = encode_command("EVALSHA", sha, 0), get_storage().transport.send  # type: ignore[attr-defined]
    return lambda limit: lambda: send(command)


Factory = Callable[[int], Callable[[], object]]


FLOOR = "floor: EVALSHA `return 1`"


def measure(
    contenders: dict[str, Factory], limit: int, checks: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """Per contender: the median µs per check, and the median of its ratio to the floor.

    Contenders take turns within each round, and each ratio pairs a contender
    with the floor of the same round, so the machine's drift between rounds
    (a shared VM's round trip can triple for minutes) cancels out of the ratio.
    Each round first prepares every key it will use (database rows, a 90%
    fill), then times the checks alone, key after key: setup work never runs
    between timed checks, where its cold caches would be billed to them.
    """
    per_key = max(1, int(limit * (1 - FULL)) - 1)
    costs: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, new in contenders.items():
            batches = [min(per_key, checks - done) for done in range(0, checks, per_key)]
            prepared = [(new(limit), batch) for batch in batches]
            start = time.perf_counter()
            for check, batch in prepared:
                for _ in range(batch):
                    if not check():
                        raise RuntimeError(f"{name} refused a check on a {FULL:.0%} full key")
            costs[name].append((time.perf_counter() - start) / checks * 1e6)
    floors = costs[FLOOR]
    return {
        name: (
            statistics.median(values),
            statistics.median(v / f for v, f in zip(values, floors, strict=True)),
        )
        for name, values in costs.items()
    }


# --- Memory of one full 5,000/min key.


def memory(url: str) -> dict[str, int]:
    from django.core.cache import cache, caches
    from django_redis import get_redis_connection
    from limits import RateLimitItemPerMinute

    from ratelimit_tiers.names import account_tag, counter_base, counter_key, policy_key
    from ratelimit_tiers.policies import KINDS
    from ratelimit_tiers.storage import get_storage

    client = get_redis_connection("default")
    limit, out = 5000, {}
    for algorithm in ("exact", "counter"):
        (prefix, account), _raw = new_key(limit, algorithm)
        storage = get_storage()
        for _ in range(limit):
            storage.hit(prefix, account, "read")
        assert storage.peek(prefix, account, "read").decision.remaining == 0  # type: ignore[union-attr]
        tag = account_tag(account)
        bucket = counter_key(counter_base(tag, prefix, "read"), "all-60s", KINDS[algorithm])
        out[f"ours, {algorithm}"] = client.memory_usage(caches["default"].make_key(bucket), samples=0)
        policy_bytes = client.memory_usage(caches["default"].make_key(policy_key(tag, prefix)), samples=0)
    out["ours, policy hash (per key, shared by its categories)"] = policy_bytes

    ident = str(next(_serial))
    throttle = drf_throttle(limit, ident)
    cache.set(f"drf-bench-{ident}", [time.time()] * (limit - 1), 60)
    throttle.allow_request(None, None)  # type: ignore[attr-defined]
    out["DRF SimpleRateThrottle"] = client.memory_usage(cache.make_key(f"drf-bench-{ident}"), samples=0)

    for kind in ("moving", "counter"):
        _limits_storage, limiter = limits_limiter(kind, url)
        item, ident = RateLimitItemPerMinute(limit), f"limits-mem-{kind}"
        for _ in range(limit):
            limiter.hit(item, ident)  # type: ignore[attr-defined]
        keys = list(client.scan_iter(f"*{ident}*"))
        label = "limits MovingWindow" if kind == "moving" else "limits SlidingWindowCounter"
        out[label] = sum(client.memory_usage(k, samples=0) for k in keys)

    now = int(time.time() * 1000)
    client.zadd("zset-log", {f"{now}-{i}": now for i in range(limit)})
    out["sorted set log (reference)"] = client.memory_usage("zset-log", samples=0)
    return out


# --- Exactness: 8 processes, one key with a limit of 100, 20 runs.

PROCESSES, EXACT_LIMIT, HITS_EACH, RUNS = 8, 100, 100, 20
_barrier: object = None
_jobs: dict[str, list[Callable[[], bool]]] = {}


def _init(barrier: object) -> None:
    global _barrier
    _barrier = barrier


def _hammer(job: tuple[str, int]) -> int:
    name, run = job
    check = _jobs[name][run]
    _barrier.wait(timeout=60)  # type: ignore[attr-defined]
    return sum(bool(check()) for _ in range(HITS_EACH))


def ours_exactness_check(algorithm: str) -> Callable[[], bool]:
    from ratelimit_tiers.exceptions import RateLimited
    from ratelimit_tiers.storage import get_storage
    from ratelimit_tiers.throttling import TierRateThrottle

    key, raw = new_key(EXACT_LIMIT, algorithm)
    get_storage().peek(*key, "read")  # Installs the policy: children need no database.
    request, view = prepared_request(raw)
    throttle = TierRateThrottle()

    def check() -> bool:
        try:
            return throttle.allow_request(request, view)  # type: ignore[arg-type]
        except RateLimited:
            return False

    return check


def exactness(url: str, runs: int) -> dict[str, list[int]]:

    for algorithm in ("exact", "counter"):
        _jobs[f"ours, {algorithm}"] = [ours_exactness_check(algorithm) for _ in range(runs)]
    _jobs["DRF SimpleRateThrottle"] = [drf_check(f"x{next(_serial)}") for _ in range(runs)]
    for kind, label in (("moving", "limits MovingWindow"), ("counter", "limits SlidingWindowCounter")):
        _jobs[label] = [limits_check(kind, url, f"x-{kind}-{next(_serial)}") for _ in range(runs)]
    context = multiprocessing.get_context("fork")  # Children inherit the prepared keys.
    barrier = context.Barrier(PROCESSES)
    results: dict[str, list[int]] = {}
    with context.Pool(PROCESSES, initializer=_init, initargs=(barrier,)) as pool:
        for name in _jobs:
            jobs = [[(name, run)] * PROCESSES for run in range(runs)]
            results[name] = [sum(pool.map(_hammer, job, chunksize=1)) for job in jobs]
    return results


def drf_check(ident: str) -> Callable[[], bool]:
    throttle = drf_throttle(EXACT_LIMIT, ident)
    return lambda: bool(throttle.allow_request(None, None))  # type: ignore[attr-defined]


def limits_check(kind: str, url: str, ident: str) -> Callable[[], bool]:
    from limits import RateLimitItemPerMinute

    item = RateLimitItemPerMinute(EXACT_LIMIT)
    return lambda: bool(_limiters(kind, url).hit(item, ident))  # type: ignore[attr-defined]


_limiter_cache: dict[str, object] = {}


def _limiters(kind: str, url: str) -> object:
    if kind not in _limiter_cache:  # One per process, created after the fork.
        _limiter_cache[kind] = limits_limiter(kind, url)[1]
    return _limiter_cache[kind]


# --- End to end and floods: bench/e2e.py's views under gunicorn (bench/load.py).


def store_commands() -> Counter[str]:
    """Commands Redis ran so far, by name (``INFO commandstats``: a script's own calls included)."""
    from django_redis import get_redis_connection

    stats = get_redis_connection("default").info("commandstats")
    return Counter(
        {
            name.removeprefix("cmdstat_"): int(v["calls"])
            for name, v in stats.items()
            if name != "cmdstat_info"
        }
    )


def cpu_meter(server: Server) -> Callable[[], tuple[float, float]]:
    """CPU seconds used so far by the server's workers, and by Redis (``INFO cpu``, user and system)."""
    from django_redis import get_redis_connection

    workers, client = server.workers(), get_redis_connection("default")

    def read() -> tuple[float, float]:
        info = client.info("cpu")
        return cpu_seconds(workers), float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    return read


def cpu_cells(row: Row, reference: Row) -> list[str]:
    """CPU µs per response of the workers and of Redis (medians), and responses per CPU s ÷ reference's."""
    return [
        f"{statistics.median(row.worker_cpu):,.0f} + {statistics.median(row.store_cpu):,.0f}",
        spread(row.cpu_ratios(reference)),
    ]


def e2e(directory: str, options: argparse.Namespace) -> None:
    from e2e import LIMIT, WINDOW

    # One key allowed far more than the load can send: every request is admitted.
    ours = f"Api-Key {new_key(LIMIT, 'exact', window=WINDOW)[1]}"
    bare = "bare DRF view (no authentication, no throttle)"
    throttled = "ours: APIKeyAuthentication + TierRateThrottle + headers"
    drf = "DRF UserRateThrottle (django-redis) + header authenticator"
    rows = {
        bare: same(request("/bare/")),
        throttled: same(request("/ours/", ours)),
        "ours, a view no 429 is answered early for (DRF's path only)": same(request("/ours-drf/", ours)),
        "ours, authentication only (no throttle class)": same(request("/auth-only/", ours)),
        drf: same(request("/drf/", "User 1")),
    }
    with serving(directory) as server, clients(server.port) as pool:
        warm(server.port, rows, {name: {200} for name in rows})
        meter = cpu_meter(server)
        results = alternate(pool, rows, options.e2e_rounds, options.seconds, store_commands, meter)
    print(
        f"End to end: one body, GET on gunicorn ({WORKERS} sync workers), {CLIENTS} client processes "
        f"(bench/client.py, a new connection per request); rate {LIMIT:,}/{WINDOW} s for both throttles; "
        f"{options.e2e_rounds} rounds of {options.seconds:g} s per row, rows alternating "
        "(x bare: median of each round's ratio, range in brackets). CPU: the workers' (/proc) and Redis's "
        "(INFO cpu) CPU time per response; x bare by CPU: responses per CPU second, workers and Redis "
        "together, over the bare view's:\n"
    )
    reference = results[bare]
    print(
        table(
            [
                "view",
                "requests/s",
                "x bare",
                "CPU µs per request: workers + Redis",
                "x bare by CPU",
                "non-200",
                "store commands per request",
            ],
            [
                [
                    name,
                    f"{statistics.median(row.rates):,.0f}",
                    spread(row.ratios(reference)),
                    *cpu_cells(row, reference),
                    str(row.responses - row.statuses[200]),
                    per_response(row),
                ]
                for name, row in results.items()
            ],
        )
        + "\n"
    )
    ours, theirs = results[throttled], results[drf]
    print(
        f"ours / DRF UserRateThrottle, per round: {spread(ours.ratios(theirs))}; "
        f"by CPU (responses per CPU second): {spread(ours.cpu_ratios(theirs))}\n"
    )


def flood(directory: str, options: argparse.Namespace) -> None:
    from e2e import LIMIT, WINDOW

    admitted_key = new_key(LIMIT, "exact", window=WINDOW)[1]
    exhausted_key = new_key(1, "exact", window=3600)[1]  # Exhausted by its first request, for an hour.
    wrong_secret = new_key(1000, "exact")[1].split(".")[0] + "." + "x" * 43
    admitted = "admitted: ours, one key"
    rows = {
        admitted: same(request("/ours/", f"Api-Key {admitted_key}")),
        "429 flood: one exhausted key, answered early": same(request("/ours/", f"Api-Key {exhausted_key}")),
        "429 flood: one exhausted key, through DRF": same(request("/ours-drf/", f"Api-Key {exhausted_key}")),
        "invalid keys: a new unknown key per request": Requests(unknown="/ours/"),
        "invalid keys: a known prefix, a wrong secret": same(request("/ours/", f"Api-Key {wrong_secret}")),
    }
    expected = dict(zip(rows, [{200}, {429}, {429}, {401, 429}, {401, 429}], strict=True))
    with serving(directory) as server, clients(server.port) as pool:
        assert send(server.port, request("/ours/", f"Api-Key {exhausted_key}")) == 200
        warm(server.port, rows, expected)
        meter = cpu_meter(server)
        results = alternate(pool, rows, options.e2e_rounds, options.seconds, store_commands, meter)
    queries = [queries_per_response(build, 20 if options.quick else 200) for build in rows.values()]
    flush_refusal_tally()
    print(
        "Floods: GET /ours/ (RATELIMIT_TIERS_EARLY_REFUSALS on; /ours-drf/: the same view with an exception "
        "handler of its own, so DRF answers every 429) on gunicorn "
        f"({WORKERS} sync workers), {CLIENTS} client processes "
        f"(bench/client.py, a new connection per request, all from 127.0.0.1); {options.e2e_rounds} "
        f"rounds of {options.seconds:g} s per row, rows alternating (x admitted: median of each round's "
        "ratio, range in brackets). Store commands: INFO commandstats over the loads, a script's own calls "
        "included. CPU: the workers' and Redis's CPU time per response; x admitted by CPU: responses per "
        "CPU second, workers and Redis together. SQL: in this process, through Django's test client, "
        "after the loads:\n"
    )
    reference = results[admitted]
    print(
        table(
            [
                "requests",
                "responses/s",
                "x admitted",
                "CPU µs per response: workers + Redis",
                "x admitted by CPU",
                "statuses",
                "store commands per response",
                "store commands per process per s",
                "script calls per process per s",
                "SQL per response",
            ],
            [
                [
                    name,
                    f"{statistics.median(row.rates):,.0f}",
                    spread(row.ratios(reference)),
                    *cpu_cells(row, reference),
                    status_mix(row),
                    per_response(row),
                    f"{sum(row.commands.values()) / row.seconds / WORKERS:,.0f}",
                    f"{row.commands['evalsha'] / row.seconds / WORKERS:,.1f}",
                    f"{sql:.2f}",
                ]
                for (name, row), sql in zip(results.items(), queries, strict=True)
            ],
        )
        + "\n"
    )
    early, through_drf = (results[name] for name in list(rows)[1:3])
    print(
        f"429s answered early / through DRF, per round: {spread(early.ratios(through_drf))}; "
        f"by CPU (responses per CPU second): {spread(early.cpu_ratios(through_drf))}\n"
    )


def flush_refusal_tally() -> None:
    """Add the refusals this process served from memory to the usage ledger now, while Redis runs."""
    from ratelimit_tiers import tally_flush

    tally_flush.flush()


def queries_per_response(build: Requests, count: int) -> float:
    """SQL queries per request of ``build``'s kind, in this process, after one untimed request."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    def get(client: Client) -> None:
        authorization = build.build().decode().split("Authorization: ")[1].split("\r\n")[0]
        client.get("/ours/", HTTP_AUTHORIZATION=authorization)

    client = Client()
    get(client)
    with CaptureQueriesContext(connection) as captured:
        for _ in range(count):
            get(client)
    return len(captured) / count


def table(header: list[str], rows: Iterator[list[str]] | list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


SECTIONS = ("checks", "rules", "ledger", "memory", "exactness", "e2e", "flood")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer checks, runs and rounds: a smoke test")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default: {','.join(SECTIONS)})",
    )
    parser.add_argument("--repeat", type=int, default=1, help="run the chosen sections this many times")
    parser.add_argument("--checks", type=int, default=200, help="checks per contender, rate and round")
    parser.add_argument("--rounds", type=int, default=31, help="rounds of the cost per check")
    parser.add_argument("--runs", type=int, default=RUNS, help="runs of the exactness test")
    parser.add_argument("--e2e-rounds", type=int, default=7, help="rounds of the end-to-end and flood loads")
    parser.add_argument("--seconds", type=float, default=2.0, help="load time per row and round (e2e, flood)")
    options = parser.parse_args()
    if options.quick:  # Smaller defaults; what the command line sets still wins.
        parser.set_defaults(checks=100, rounds=3, runs=3, e2e_rounds=2, seconds=0.5)
        options = parser.parse_args()
    sections = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))} (choose from {', '.join(SECTIONS)})")

    with benchmark_django() as (url, directory):
        print(setup() + "\n")
        for run in range(options.repeat):
            if options.repeat > 1:
                print(f"## Run {run + 1} of {options.repeat}\n")
            for name in sections:
                SECTION_RUNNERS[name](url, directory, options)


def setup() -> str:
    """What the numbers depend on: versions, whether redis-py parses replies with hiredis, CPUs."""
    from importlib.metadata import version

    import django
    import limits
    import redis
    import rest_framework
    from django_redis import get_redis_connection
    from redis.utils import HIREDIS_AVAILABLE

    info = get_redis_connection("default").info("server")
    return (
        f"redis-server {info['redis_version']}, redis-py {redis.__version__} "
        f"{'with' if HIREDIS_AVAILABLE else 'without'} hiredis, Python {sys.version.split()[0]}, "
        f"Django {django.__version__}, DRF {rest_framework.VERSION}, limits {limits.__version__}, "
        f"gunicorn {version('gunicorn')}, {os.cpu_count()} CPUs"
    )


def checks(url: str, options: argparse.Namespace) -> None:
    contenders = {
        "ours, exact": make_ours("exact"),
        "ours, counter": make_ours("counter"),
        "(ours, exact: the script call alone)": make_script_only("exact"),
        "(ours, counter: the script call alone)": make_script_only("counter"),
        "DRF SimpleRateThrottle (django-redis)": new_drf,
        "limits MovingWindow": make_limits("moving", url),
        "limits SlidingWindowCounter": make_limits("counter", url),
        FLOOR: make_floor(),
        "(floor, sent as ours sends it)": make_floor_as_sent_by_ours(),
    }
    costs = {rate: measure(contenders, rate, options.checks, options.rounds) for rate in RATES}
    header = ["µs per check (x floor)", *[f"{rate:,}/min" for rate in RATES]]
    rows = [
        [name, *[f"{costs[r][name][0]:.0f} ({costs[r][name][1]:.2f}x)" for r in RATES]] for name in contenders
    ]
    print(
        f"Cost per check, key {FULL:.0%} full: median of {options.rounds} rounds of {options.checks} checks "
        "(x floor: median of each round's ratio to that round's floor):\n"
    )
    print(table(header, rows) + "\n")


#: The rule sets compared: one rule, and the issue's three (a second, a minute and a day quota).
ONE_RULE = ("1000/min",)
THREE_RULES = ("10/s", "1000/min", "100000/day")


class RuleKey(NamedTuple):
    """A key of the several-rules benchmark: what the store is asked with, and its request as views see it."""

    prefix: str
    account: int
    request: object
    view: object


def rule_keys(rates: tuple[str, ...], count: int) -> list[RuleKey]:
    """``count`` new keys of one tier with ``rates``, each of its own account, policies installed."""
    from ratelimit_tiers.models import Account, APIKey, LimitRule, Tier
    from ratelimit_tiers.rules import parse_limit
    from ratelimit_tiers.storage import get_storage

    tier = Tier.objects.create(name=f"bench-rules-{next(_serial)}")
    for rate in rates:
        limit, window, calendar = parse_limit(rate)
        LimitRule.objects.create(tier=tier, count=limit, window_seconds=window, calendar=calendar)
    keys = []
    for _ in range(count):
        account = Account.objects.create(name=f"bench-{next(_serial)}", tier=tier)
        key, raw = APIKey.objects.create_key(account=account, name="bench")
        get_storage().peek(key.prefix, account.pk, "read")
        keys.append(RuleKey(key.prefix, account.pk, *prepared_request(raw)))
    return keys


#: Checks in a row on one side before the other side's turn (several rules, the ledger).
BLOCK = 25


def rules_table(options: argparse.Namespace) -> None:
    """One check against three rules against one, in alternating blocks of the same run.

    Measured at two depths: the store's check alone (``Storage.hit``, the
    script call and its parsing), and the throttle's (``TierRateThrottle.
    allow_request``, what a request pays, as the ledger's cost is measured).
    Every check is admitted: each round uses each key once, over enough keys
    that none sees 10 in a second. The sides take turns every :data:`BLOCK`
    checks; a round's ratio is its three-rule time over its one-rule time,
    the figure their median, which cancels the machine's drift.
    """
    from ratelimit_tiers.storage import get_storage
    from ratelimit_tiers.throttling import TierRateThrottle

    storage, throttle, checks = get_storage(), TierRateThrottle(), options.checks * 5
    sides = {"one": rule_keys(ONE_RULE, checks * 2), "three": rule_keys(THREE_RULES, checks * 2)}
    depths: dict[str, Callable[[RuleKey], bool]] = {
        "store (Storage.hit)": lambda key: storage.hit(key.prefix, key.account, "read").allowed,
        "throttle (allow_request)": lambda key: throttle.allow_request(key.request, key.view),  # type: ignore[arg-type]
    }
    print(
        f"Several rules: one check against {' + '.join(THREE_RULES)} vs {ONE_RULE[0]} alone, "
        f"{options.rounds} rounds of {checks} admitted checks a side, in blocks of {BLOCK} taking turns:\n"
    )
    rows = []
    for depth, check in depths.items():
        costs: dict[str, list[float]] = {"one": [], "three": []}
        for round_ in range(options.rounds):
            spent = {"one": 0.0, "three": 0.0}
            half = (round_ % 2) * checks
            for block in range(half, half + checks, BLOCK):
                for name in ("one", "three") if (round_ + block // BLOCK) % 2 else ("three", "one"):
                    start = time.perf_counter()
                    for key in sides[name][block : block + BLOCK]:
                        if not check(key):
                            raise RuntimeError("a several-rules benchmark check was refused")
                    spent[name] += time.perf_counter() - start
            for name, seconds in spent.items():
                costs[name].append(seconds / checks * 1e6)
        ratios = [three / one for one, three in zip(costs["one"], costs["three"], strict=True)]
        rows.append(
            [
                depth,
                f"{statistics.median(costs['one']):.0f}",
                f"{statistics.median(costs['three']):.0f}",
                f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}x-{max(ratios):.2f}x)",
            ]
        )
    header = ["check", "1 rule: µs (median)", "3 rules: µs (median)", "3 ÷ 1 (median of rounds, range)"]
    print(table(header, rows) + "\n")


#: Keys per round of the ledger's cost, each of its own account, one rule of ``LEDGER_RATE``.
LEDGER_RATE = ("1000/min",)


def ledger_table(options: argparse.Namespace) -> None:
    """The cost per check with the usage ledger against without it, interleaved in blocks of one run.

    Both sides are ``TierRateThrottle.allow_request`` on admitted checks, over
    keys each of its own account that were used before (their ledger field
    exists, as on any busy key). Off is ``RATELIMIT_TIERS_LEDGER_DAYS = 0``:
    the same script, told to count nothing. Each side has a storage of its
    own, built and warmed (connections, encoded calls) under its setting; the
    throttle is pointed at one or the other every :data:`BLOCK` checks,
    so the machine's drift hits both alike. A round's ratio is its on time
    over its off time; the figure is their median. Then the store memory.
    """
    from django.test import override_settings

    from ratelimit_tiers import storage as storages
    from ratelimit_tiers.ledger import LedgerScope
    from ratelimit_tiers.storage.redis import RedisStorage
    from ratelimit_tiers.throttling import TierRateThrottle

    checks = options.checks * 2
    keys = [prepared_request(raw) for raw in ledger_keys(checks)]
    throttle, sides = TierRateThrottle(), {}
    for days in (7, 0):
        with override_settings(RATELIMIT_TIERS_LEDGER_DAYS=days):
            sides[days] = storages._current = RedisStorage("default")
            for drf_request, view in keys:  # Policies installed, ledger fields written, calls encoded.
                throttle.allow_request(drf_request, view)  # type: ignore[arg-type]
    costs: dict[int, list[float]] = {7: [], 0: []}
    for round_ in range(options.rounds):
        spent = {7: 0.0, 0: 0.0}
        for block in range(0, checks, BLOCK):
            for days in (7, 0) if (round_ + block // BLOCK) % 2 else (0, 7):
                storages._current = sides[days]
                start = time.perf_counter()
                for drf_request, view in keys[block : block + BLOCK]:
                    if not throttle.allow_request(drf_request, view):  # type: ignore[arg-type]
                        raise RuntimeError("a ledger benchmark check was refused")
                spent[days] += time.perf_counter() - start
        for days, seconds in spent.items():
            costs[days].append(seconds / checks * 1e6)
    storages._current = None
    # The off side counted nothing: a key's ledger has its warm-up check and one per round, on side.
    identity = keys[0][0].auth  # type: ignore[attr-defined]
    hour = int(time.time() // 3600)
    counted = sides[7].read_ledger([LedgerScope(identity.account_id)], [hour - 1, hour])
    assert sum(counts.admitted for counts in counted.values()) == 1 + options.rounds, counted
    ratios = [on / off for on, off in zip(costs[7], costs[0], strict=True)]
    print(
        f"Usage ledger: cost per check (TierRateThrottle.allow_request, {LEDGER_RATE[0]}, exact) with the "
        f"ledger on (LEDGER_DAYS = 7) and off (0), {options.rounds} rounds of {checks} admitted checks a "
        f"side, in blocks of {BLOCK} taking turns:\n"
    )
    rows = [
        ["off (LEDGER_DAYS = 0)", f"{statistics.median(costs[0]):.0f}", "1.00x"],
        ["on (LEDGER_DAYS = 7)", f"{statistics.median(costs[7]):.0f}", f"{statistics.median(ratios):.3f}x"],
    ]
    print(table(["ledger", "µs per check (median)", "x off (median of round ratios)"], rows) + "\n")
    print(f"x off per round: {spread_of(ratios)}\n")
    ledger_memory()


def spread_of(ratios: list[float]) -> str:
    return f"median {statistics.median(ratios):.3f}x, {min(ratios):.3f}x-{max(ratios):.3f}x"


def ledger_keys(count: int) -> list[str]:
    """``count`` raw keys, each of its own account, of one tier of ``LEDGER_RATE``."""
    from ratelimit_tiers.models import Account, APIKey, LimitRule, Tier
    from ratelimit_tiers.rules import parse_limit

    tier = Tier.objects.create(name=f"bench-ledger-{next(_serial)}")
    for rate in LEDGER_RATE:
        limit, window, calendar = parse_limit(rate)
        LimitRule.objects.create(
            tier=tier, count=limit, window_seconds=window, calendar=calendar, algorithm="exact"
        )
    raws = []
    for _ in range(count):
        account = Account.objects.create(name=f"bench-{next(_serial)}", tier=tier)
        raws.append(APIKey.objects.create_key(account=account, name="bench")[1])
    return raws


def ledger_memory() -> None:
    """MEMORY USAGE of ledger hashes the script wrote this hour, per key and day (24 such hashes a day)."""
    from django.core.cache import caches
    from django_redis import get_redis_connection

    from ratelimit_tiers.models import Account, APIKey, LimitRule, Tier
    from ratelimit_tiers.names import account_tag, ledger_key
    from ratelimit_tiers.storage import get_storage

    client, storage, rows = get_redis_connection("default"), get_storage(), []
    for keys, categories in ((1, ("read",)), (1, ("read", "write", "delete")), (10, ("read",))):
        tier = Tier.objects.create(name=f"bench-ledger-memory-{next(_serial)}")
        LimitRule.objects.create(tier=tier, count=5, window_seconds=3600)
        account = Account.objects.create(name=f"bench-{next(_serial)}", tier=tier)
        for i in range(keys):
            key = APIKey.objects.create_key(account=account, name=f"k{i}")[0]
            for category in categories:
                for _ in range(8):  # Admitted, then refused: every field a busy key has in an hour.
                    storage.hit(key.prefix, account.pk, category)
        stem = caches["default"].make_key(ledger_key(account_tag(account.pk)))
        used = sum(client.memory_usage(name, samples=0) for name in client.keys(f"{stem}:*"))
        per_key_day = used * 24 / keys
        kinds = "category" if len(categories) == 1 else "categories"
        rows.append(
            [f"{keys} key(s) of one account, {len(categories)} {kinds}", f"{used:,}", f"{per_key_day:,.0f}"]
        )
    print(
        "Usage ledger memory: an account's hash of one hour (MEMORY USAGE) whose keys each were admitted and "
        "refused (fields: admitted, refused by one rule, last refusal, per key and category), and 24 such "
        "hours per active key and day:\n"
    )
    print(table(["account", "bytes per hour", "bytes per active key and day"], rows) + "\n")


def memory_table(url: str) -> None:
    print("Redis memory of one full 5,000/min key (MEMORY USAGE):\n")
    print(table(["approach", "bytes"], [[k, f"{v:,}"] for k, v in memory(url).items()]) + "\n")


def exactness_table(url: str, runs: int) -> None:
    print(f"Admitted: {PROCESSES} processes x {HITS_EACH} hits, one key, limit {EXACT_LIMIT}, {runs} runs\n")
    rows = [
        [name, f"{sum(v == EXACT_LIMIT for v in values)}/{runs}", f"{min(values)}-{max(values)}"]
        for name, values in exactness(url, runs).items()
    ]
    print(table(["approach", f"runs with exactly {EXACT_LIMIT}", "admitted (min-max)"], rows) + "\n")


SECTION_RUNNERS: dict[str, Callable[[str, str, argparse.Namespace], None]] = {
    "checks": lambda url, directory, options: checks(url, options),
    "rules": lambda url, directory, options: rules_table(options),
    "ledger": lambda url, directory, options: ledger_table(options),
    "memory": lambda url, directory, options: memory_table(url),
    "exactness": lambda url, directory, options: exactness_table(url, options.runs),
    "e2e": lambda url, directory, options: e2e(directory, options),
    "flood": lambda url, directory, options: flood(directory, options),
}


if __name__ == "__main__":
    main()
