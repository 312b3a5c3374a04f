"""End to end: bench/e2e.py's views under gunicorn, loaded over loopback by client processes.

The load: ``CLIENTS`` processes of bench/client.py, each a loop of one request
per new connection (gunicorn's sync workers close every connection) on a raw
socket, reading the answer to its end. They run apart from this process: the
benchmark's own interpreter (its GIL, its Django) never sits between a client
and the server. The clients still share the machine's CPUs with the server,
so they do as little as a request allows: their cost is paid by every row alike.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from client import send, unknown_key_request

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
#: gunicorn's sync workers, and the client processes that load them (two each: while one client
#: reads its answer and connects again, the other's request waits in the worker's backlog).
WORKERS, CLIENTS = 2, 4

#: The settings of the bench process and of the gunicorn it starts: the testproject's, serving bench/e2e.py.
SETTINGS = "bench_settings"
SETTINGS_SOURCE = """from testproject.settings import *  # noqa: F403

DEBUG = False
ROOT_URLCONF = "e2e"
# The testproject gives up on Redis after 0.1 s (then fails open). On a loaded, shared machine a stall
# that long is no outage to measure: wait for the answer.
CACHES["default"]["OPTIONS"] = {"SOCKET_CONNECT_TIMEOUT": 5, "SOCKET_TIMEOUT": 5}  # noqa: F405
# /ours/ answers a noted 429 early; /ours-drf/, the same view through DRF (e2e.py), never does.
RATELIMIT_TIERS_EARLY_REFUSALS = True
"""


@dataclass(frozen=True)
class Requests:
    """What a row sends: ``data`` on every request, or a new unknown key on ``unknown`` (a path) each time."""

    data: bytes = b""
    unknown: str | None = None

    def build(self) -> bytes:
        return self.data if self.unknown is None else unknown_key_request(self.unknown)()

    def order(self, seconds: float) -> str:
        """The JSON line that tells a bench/client.py process to send these for ``seconds``."""
        what = {"request": self.data.decode("latin-1")} if self.unknown is None else {"unknown": self.unknown}
        return json.dumps({"seconds": seconds, **what}) + "\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(path: str, authorization: str | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def same(data: bytes) -> Requests:
    return Requests(data)


def write_settings(directory: str) -> list[str]:
    """Write the ``SETTINGS`` module into ``directory``; return the paths that import it and bench/e2e.py."""
    Path(directory, f"{SETTINGS}.py").write_text(SETTINGS_SOURCE)
    return [directory, str(BENCH), str(ROOT)]


@dataclass(frozen=True)
class Server:
    """A running gunicorn: its port, and its master's process id (its workers are the master's children)."""

    port: int
    pid: int

    def workers(self) -> list[int]:
        """The process ids of the master's children (Linux ``/proc``; none elsewhere)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            fields = _stat_fields(stat)
            if fields is not None and int(fields[1]) == self.pid:
                found.append(int(stat.parent.name))
        return found


def _stat_fields(stat: Path) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, ...), if readable."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pids: list[int]) -> float:
    """The CPU time (user and system) the processes used so far, in seconds (Linux ``/proc``)."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(Path(f"/proc/{pid}/stat"))
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of the file.
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def serving(directory: str) -> Iterator[Server]:
    """gunicorn (``WORKERS`` sync workers) serving bench/e2e.py with ``SETTINGS``.

    The environment (``REDIS_URL``, ``DJANGO_DB``) is this process's: the same Redis and database.
    """
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "PYTHONPATH": os.pathsep.join(write_settings(directory)),
    }
    command = [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-b", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [*command, "testproject.wsgi:application"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(300):
            if server.poll() is not None:
                raise RuntimeError("gunicorn exited")
            try:
                if send(port, request("/bare/")) == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("gunicorn did not answer")
        yield Server(port, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)


def warm(port: int, rows: dict[str, Requests], expected: dict[str, set[int]], count: int = 100) -> None:
    """Warm every worker on every row (caches, policies, connections), checking each answer."""
    for name, requests in rows.items():
        for _ in range(count):
            status = send(port, requests.build())
            if status not in expected[name]:
                raise RuntimeError(f"{name}: {status}, expected {sorted(expected[name])}")


@contextmanager
def clients(port: int, count: int = CLIENTS) -> Iterator[list[subprocess.Popen[str]]]:
    """``count`` bench/client.py processes for ``port``, started once and driven by :func:`load`."""
    command = [sys.executable, str(BENCH / "client.py"), str(port)]
    pool = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    try:
        yield pool
    finally:
        for process in pool:
            process.stdin.close()  # type: ignore[union-attr]
        for process in pool:
            process.wait(timeout=30)


def load(pool: list[subprocess.Popen[str]], requests: Requests, seconds: float) -> tuple[Counter[int], float]:
    """The statuses of what the client processes got while they looped for ``seconds``, and the time taken.

    Every client gets its order before any answer is read, so they start
    together; the time is the longest of their loops.
    """
    order = requests.order(seconds)
    for process in pool:
        process.stdin.write(order)  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]
    statuses: Counter[int] = Counter()
    elapsed = 0.0
    for process in pool:
        answer = json.loads(process.stdout.readline())  # type: ignore[union-attr]
        statuses.update({int(status): count for status, count in answer["statuses"].items()})
        elapsed = max(elapsed, answer["seconds"])
    return statuses, elapsed


@dataclass
class Row:
    """A row's rounds: the responses/s and CPU µs per response of each; statuses and store commands of all."""

    rates: list[float] = field(default_factory=list)
    #: Per round: the workers' and the store's CPU time per response, in µs.
    worker_cpu: list[float] = field(default_factory=list)
    store_cpu: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def responses(self) -> int:
        return sum(self.statuses.values())

    def ratios(self, reference: Row) -> list[float]:
        """This row's responses/s over the reference's, round by round."""
        return [mine / theirs for mine, theirs in zip(self.rates, reference.rates, strict=True)]

    def cpu(self) -> list[float]:
        """Per round: the CPU µs per response of the workers and the store together."""
        return [mine + store for mine, store in zip(self.worker_cpu, self.store_cpu, strict=True)]

    def cpu_ratios(self, reference: Row) -> list[float]:
        """Responses per CPU second (workers and store) over the reference's, round by round."""
        return [theirs / mine for mine, theirs in zip(self.cpu(), reference.cpu(), strict=True)]


def alternate(
    pool: list[subprocess.Popen[str]],
    rows: dict[str, Requests],
    rounds: int,
    seconds: float,
    commands: Callable[[], Counter[str]],
    cpu: Callable[[], tuple[float, float]],
) -> dict[str, Row]:
    """Load each row for ``seconds`` per round, rows taking turns in an order rotated every round.

    A round's rows run within seconds of each other, so the machine's drift
    cancels out of each round's ratios. ``commands`` counts the store's
    commands so far (by name), ``cpu`` the CPU seconds the workers and the
    store used so far, both read before and after each row's load. CPU time
    per response is what a request costs the server, whatever else the
    machine runs meanwhile (its cache effects aside); responses per second
    also depend on how much of the CPUs the server got.
    """
    results = {name: Row() for name in rows}
    names = list(rows)
    for number in range(rounds):
        turn = number % len(names)
        for name in names[turn:] + names[:turn]:
            before, (workers_before, store_before) = commands(), cpu()
            statuses, elapsed = load(pool, rows[name], seconds)
            workers_after, store_after = cpu()
            row = results[name]
            row.commands.update(commands() - before)
            row.statuses.update(statuses)
            responses = max(1, sum(statuses.values()))
            row.rates.append(responses / elapsed)
            row.worker_cpu.append((workers_after - workers_before) / responses * 1e6)
            row.store_cpu.append((store_after - store_before) / responses * 1e6)
            row.seconds += elapsed
    return results


def spread(values: list[float]) -> str:
    """The median, and the range in brackets."""
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def per_response(row: Row) -> str:
    """Store commands per response, in all and by command (the most frequent, at least 0.01 each)."""
    responses = max(1, row.responses)
    total = sum(row.commands.values()) / responses
    frequent = [(name, calls / responses) for name, calls in row.commands.most_common(6)]
    names = ", ".join(f"{name} {each:.2f}" for name, each in frequent if each >= 0.01)
    return f"{total:.2f}" + (f" ({names})" if names else "")


def status_mix(row: Row) -> str:
    return ", ".join(
        f"{status} {count / max(1, row.responses):.0%}" for status, count in sorted(row.statuses.items())
    )
