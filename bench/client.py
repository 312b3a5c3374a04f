"""One load client, a process of its own: bench/load.py starts several and drives them over stdin.

It imports nothing but the standard library, so it starts fast and shares no
interpreter (no GIL) with the benchmark process or the other clients. Each
line it reads is a JSON order: ``{"seconds": s, "request": "<latin-1 bytes>"}``
(the same request each time) or ``{"seconds": s, "unknown": "<path>"}`` (a
new well-formed key that no one issued on every request, a scanner's). It
sends requests one after the other, each on a new connection (gunicorn's sync
workers close every connection), reads each answer to its end, and writes one
JSON line: ``{"statuses": {"200": n, ...}, "seconds": elapsed}``. An empty
line or end of input ends it.
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable


def send(port: int, data: bytes) -> int:
    """The status of one request on a new connection, whose answer is read to its end."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        chunks = [sock.recv(65536)]
        while chunks[-1]:
            chunks.append(sock.recv(65536))
    return int(b"".join(chunks)[9:12])


def unknown_key_request(path: str) -> Callable[[], bytes]:
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Api-Key "

    def build() -> bytes:
        return f"{head}{secrets.token_hex(6)}.{secrets.token_urlsafe(32)}\r\n\r\n".encode()

    return build


def same(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def loop(port: int, build: Callable[[], bytes], seconds: float) -> tuple[Counter[int], float]:
    statuses: Counter[int] = Counter()
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        statuses[send(port, build())] += 1
    return statuses, time.perf_counter() - start


def main() -> None:
    port = int(sys.argv[1])
    for line in sys.stdin:
        if not line.strip():
            break
        order = json.loads(line)
        if "unknown" in order:
            build = unknown_key_request(order["unknown"])
        else:
            build = same(order["request"].encode("latin-1"))
        statuses, elapsed = loop(port, build, order["seconds"])
        print(json.dumps({"statuses": dict(statuses), "seconds": elapsed}), flush=True)


if __name__ == "__main__":
    main()
