"""Benchmark: our throttle vs DRF's SimpleRateThrottle vs ``limits`` vs the EVALSHA floor.

Run ``python bench/run.py`` from the repository root (``--quick`` for a smoke
run). It starts its own redis-server on a free port and a temporary SQLite
database, and prints Markdown tables; see bench/README.md for what each
figure means.
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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RATES = (60, 1000, 5000)
FULL = 0.9  # How full a key is while it is measured.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def setup_django(redis_url: str, db: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    os.environ["REDIS_URL"] = redis_url
    os.environ["DJANGO_DB"] = db
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    # The throttle logs every refusal; the exactness runs refuse thousands.
    logging.getLogger("ratelimit_tiers").setLevel(logging.WARNING)


# --- The contenders. Each ``new_<name>(limit)`` returns a check on a fresh key
# that is already FULL; the harness uses each key for at most 10% of its limit.

_serial = iter(range(10**9))


def new_key(limit: int, algorithm: str, override: int | None = None) -> tuple[tuple[str, int], str]:
    """A new key of a tier of one rule, ``limit`` per minute (its account's own rule: ``override``):
    ``((prefix, account id), raw key)``."""
    from ratelimit_tiers.models import Account, APIKey, LimitRule, Tier

    tier, created = Tier.objects.get_or_create(name=f"bench-{limit}-{algorithm}")
    if created:
        LimitRule.objects.create(tier=tier, count=limit, window_seconds=60, algorithm=algorithm)
    account = Account.objects.create(name=f"bench-{next(_serial)}", tier=tier)
    if override is not None:
        LimitRule.objects.create(account=account, count=override, window_seconds=60, algorithm=algorithm)
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

    sha = get_redis_connection("default").script_load("return 1")
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
        storage, limiter = limits_limiter(kind, url)
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


# --- End to end: the testproject under gunicorn, loaded from this process.

E2E_SETTINGS = {
    "throttled (auth + TierRateThrottle)": "",
    "auth only (no throttle class)": 'REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}',
    "neither (AllowAny, no auth)": (
        'REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": [], '
        '"DEFAULT_AUTHENTICATION_CLASSES": [], '
        '"DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"]}'
    ),
}


def get(port: int, headers: dict[str, str]) -> int:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/api/items/", headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def end_to_end(directory: str, seconds: float, workers: int, threads: int) -> dict[str, tuple[float, int]]:
    # One key allowed far more than the load can send, so every request is admitted.
    _key, raw = new_key(5000, "exact", override=10**6)
    headers = {"Authorization": f"Api-Key {raw}"}
    results = {}
    for number, (label, extra) in enumerate(E2E_SETTINGS.items()):
        module = f"bench_settings_{number}"
        Path(directory, f"{module}.py").write_text(
            f"from testproject.settings import *  # noqa: F403\nDEBUG = False\n{extra}\n"
        )
        port = free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": module,
            "PYTHONPATH": os.pathsep.join([directory, str(ROOT)]),
        }
        command = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}"]
        server = subprocess.Popen(
            [*command, "testproject.wsgi:application"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
        )
        try:
            for _ in range(300):
                try:
                    if get(port, headers) == 200:
                        break
                except OSError:
                    time.sleep(0.1)
            for _ in range(100):  # Warm every worker.
                assert get(port, headers) == 200
            results[label] = load(port, headers, seconds, threads)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return results


def load(port: int, headers: dict[str, str], seconds: float, threads: int) -> tuple[float, int]:
    """Requests/s answered 200 while ``threads`` clients loop for ``seconds``, and the other answers."""
    counts = {"ok": 0, "other": 0}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        while time.perf_counter() < deadline:
            status = get(port, headers)
            with lock:
                counts["ok" if status == 200 else "other"] += 1

    start = time.perf_counter()
    pool = [threading.Thread(target=client) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return counts["ok"] / (time.perf_counter() - start), counts["other"]


def table(header: list[str], rows: Iterator[list[str]] | list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer checks and runs: a smoke test")
    parser.add_argument("--checks", type=int, default=200, help="checks per contender, rate and round")
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--seconds", type=float, default=4.0, help="load time per end-to-end variant")
    options = parser.parse_args()
    if options.quick:
        options.checks, options.rounds, options.seconds = 100, 3, 1.0
    runs = 3 if options.quick else RUNS

    with tempfile.TemporaryDirectory() as directory:
        redis, url = start_redis(directory)
        try:
            setup_django(url, str(Path(directory, "db.sqlite3")))
            report(url, directory, options, runs)
        finally:
            redis.kill()
            redis.wait()


def report(url: str, directory: str, options: argparse.Namespace, runs: int) -> None:
    import django
    import limits
    import rest_framework
    from django_redis import get_redis_connection

    info = get_redis_connection("default").info("server")
    python = sys.version.split()[0]
    print(
        f"redis-server {info['redis_version']}, Python {python}, Django {django.__version__}, "
        f"DRF {rest_framework.VERSION}, limits {limits.__version__}, {os.cpu_count()} CPUs\n"
    )
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

    print("Redis memory of one full 5,000/min key (MEMORY USAGE):\n")
    print(table(["approach", "bytes"], [[k, f"{v:,}"] for k, v in memory(url).items()]) + "\n")

    print(f"Admitted: {PROCESSES} processes x {HITS_EACH} hits, one key, limit {EXACT_LIMIT}, {runs} runs\n")
    rows = [
        [name, f"{sum(v == EXACT_LIMIT for v in values)}/{runs}", f"{min(values)}-{max(values)}"]
        for name, values in exactness(url, runs).items()
    ]
    print(table(["approach", f"runs with exactly {EXACT_LIMIT}", "admitted (min-max)"], rows) + "\n")

    workers, threads = 2, 8
    print(
        f"End to end: GET /api/items/ on gunicorn ({workers} sync workers), {threads} client threads "
        f"in this process, new connection per request, {options.seconds:g} s each:\n"
    )
    rows = [
        [label, f"{rps:,.0f}", str(other)]
        for label, (rps, other) in end_to_end(directory, options.seconds, workers, threads).items()
    ]
    print(table(["testproject", "requests/s", "non-200"], rows))


if __name__ == "__main__":
    main()
