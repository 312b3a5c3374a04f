"""Real processes for the fault tests: the testproject under gunicorn or uvicorn, and HTTP load against it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests import postgres
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent

CREATE_KEYS = """
import json
from ratelimit_tiers.models import Account, APIKey, LimitRule, Tier
out = {}
for name, tier, limit in json.loads(%r):
    account = Account.objects.create(name=name, tier=Tier.objects.get(name=tier))
    if limit is not None:  # The account's own rule per minute, in place of its tier's.
        LimitRule.objects.create(account=account, count=limit, window_seconds=60)
    out[name] = APIKey.objects.create_key(account=account, name=name)[1]
print(json.dumps(out))
"""


#: Settings for a ProjectServer on a Redis at a given URL (``%`` it in): 0.1 s timeouts, fail-open.
FAIL_OPEN_SETTINGS = """
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": %r,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.1, "SOCKET_TIMEOUT": 0.1},
    }
}
DEBUG = False
RATELIMIT_TIERS_FAIL_OPEN = True
"""

#: How the testproject can be served: gunicorn's sync or threaded (gthread) workers, or uvicorn's
#: own process manager on the ASGI application (uvicorn 0.54 no longer ships ``uvicorn.workers``).
WORKER_KINDS = ("sync", "gthread", "uvicorn")


class ProjectServer:
    """The testproject with its own database and settings module, served by ``workers`` processes.

    ``kind`` is one of :data:`WORKER_KINDS`; ``threads`` is each gthread worker's thread count.
    """

    def __init__(
        self, directory: Path, settings: str, workers: int = 3, kind: str = "sync", threads: int = 8
    ) -> None:
        assert kind in WORKER_KINDS, kind
        self.directory = directory
        self.workers, self.kind, self.threads = workers, kind, threads
        (directory / "chaos_settings.py").write_text(
            "from testproject.settings import *  # noqa\n" + settings
        )
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chaos_settings",
            **postgres.database_env(directory),
            "PYTHONPATH": os.pathsep.join([str(directory), str(ROOT)]),
        }
        self.env.pop("REDIS_URL", None)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.manage("migrate", "-v0")

    def manage(self, *args: str) -> str:
        command = [sys.executable, "manage.py", *args]
        result = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, check=False)
        if result.returncode:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stderr}")
        return result.stdout

    def create_keys(self, *specs: tuple[str, str, int | None]) -> dict[str, str]:
        """``(account name, tier, custom limit per minute)`` -> a raw key for each, in one process."""
        output = self.manage("shell", "-c", CREATE_KEYS % json.dumps(specs))
        return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def command(self, *options: str) -> list[str]:
        """The server's command line; ``options`` are more of gunicorn's (e.g. ``-c`` a file)."""
        if self.kind == "uvicorn":
            return [
                *(sys.executable, "-m", "uvicorn", "testproject.asgi:application"),
                *("--workers", str(self.workers), "--host", "127.0.0.1", "--port", str(self.port)),
                "--no-access-log",
            ]
        gthread = ("--worker-class", "gthread", "--threads", str(self.threads))
        threads = gthread if self.kind == "gthread" else ()
        return [
            *(sys.executable, "-m", "gunicorn", "--workers", str(self.workers), *threads),
            *("--bind", f"127.0.0.1:{self.port}", *options, "testproject.wsgi:application"),
        ]

    def start(self, *options: str) -> None:
        self.log = (self.directory / "server.log").open("wb")
        self.process = subprocess.Popen(
            self.command(*options),
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the server exited: " + self.log_text()
            try:
                if request(self.port, "/admin/login/").status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.kind} workers did not start serving")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
            self.log.close()

    def log_text(self) -> str:
        return (self.directory / "server.log").read_text(errors="replace")[-5000:]


def run_python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``args`` in a new Python process at the repository's root (60 s at most)."""
    command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


@dataclass(frozen=True)
class Sample:
    started: float  # time.monotonic()
    latency: float  # seconds
    status: int  # 0: the connection failed
    limited: bool  # the response carried X-RateLimit-Limit (the store answered)


def request(port: int, path: str, key: str | None = None, timeout: float = 30) -> Sample:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.monotonic()
    try:
        headers = {"Authorization": f"Api-Key {key}"} if key else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        status, limited = response.status, response.getheader("X-RateLimit-Limit") is not None
    except OSError:
        status, limited = 0, False
    finally:
        connection.close()
    return Sample(started, time.monotonic() - started, status, limited)


class Load:
    """``threads`` clients sending GETs back to back until :meth:`stop` (at most ``limit`` seconds)."""

    def __init__(self, port: int, key: str, threads: int = 6, limit: float = 60) -> None:
        self.port, self.key, self.limit = port, key, limit
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            sample = request(self.port, "/api/items/", self.key, timeout=10)
            with self._lock:
                self.samples.append(sample)

    def stop(self) -> list[Sample]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return sorted(self.samples, key=lambda s: s.started)

    def between(self, start: float, end: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if start <= s.started < end]


def percentiles(samples: list[Sample]) -> dict[str, float]:
    """p50/p99/max latency in milliseconds."""
    latencies = sorted(s.latency * 1000 for s in samples)
    if not latencies:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {"n": len(latencies), "p50": statistics.median(latencies), "p99": p99, "max": latencies[-1]}


def burst(port: int, key: str, count: int, threads: int = 32) -> list[Sample]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: request(port, "/api/items/", key), range(count)))


def recovered_after(samples: list[Sample], start: float, stop: float) -> float:
    """Seconds from ``start`` until the first response after which a full second was all limited."""
    part = [s for s in samples if start <= s.started < stop]
    for i, sample in enumerate(part):
        window = [s for s in part[i:] if s.started < sample.started + 1]
        if sample.started + 1 <= stop and all(s.limited for s in window):
            return sample.started - start
    return stop - start
