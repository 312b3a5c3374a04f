"""Where the time of one request goes: µs per request in each phase, admitted and refused, without a profiler.

Run ``python bench/phases.py`` from the repository root (``--requests``,
``--rounds``). It starts its own redis-server and a temporary SQLite database
(as ``bench/run.py`` does) and sends whole requests through Django's WSGI
handler, as a gunicorn worker calls it, to bench/e2e.py's views with the
benchmark's settings and the testproject's logging as a worker has it
(``ratelimit_tiers`` at INFO to a stream, here ``/dev/null``; Django's
warning for every 4xx). Three kinds of request take turns, round after round:
the bare view, an admitted request through this app, and a 429 served from
this process's memory for an exhausted key. A few functions on the way are
wrapped with a timer (a wrapper costs well under 1 µs, where a profiler
would triple the cost of every Python call); a cell is the median over
rounds of the (wall) time spent in that phase per request, but for one row:
the whole request's CPU time in this process, which leaves out the wait for
the store's answer. Phases nest as the names say; what the whole request
spends outside them is Django's and DRF's own work (middleware, URL
resolution, content negotiation), the same for every row. No HTTP:
gunicorn's parsing, the sockets and the client come on top, the same for
every row too.
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from run import new_key, setup_django, start_redis, table

_spent: defaultdict[str, float] = defaultdict(float)

#: The whole request's CPU time in this process (the store call's wait excluded, its system calls not).
CPU = "whole request, CPU time of this process"

PHASES = (
    "whole request (Django's WSGI handler)",
    CPU,
    "DRF initial(): negotiation, authentication, permissions, throttles",
    "authentication (APIKeyAuthentication)",
    "throttle (TierRateThrottle.allow_request)",
    "  of which the store call (one round trip)",
    "  of which the refusal's signal and INFO log line",
    "RateLimited(): the 429's body",
    "DRF handle_exception(): exception handler, Response",
    "Django's warning log of a 4xx (log_response)",
    "JSON rendering",
    "headers (RateLimitHeadersMiddleware)",
)


def timed(
    phase: str, function: Callable[..., Any], clock: Callable[[], float] = time.perf_counter
) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return function(*args, **kwargs)
        finally:
            _spent[phase] += clock() - start

    return wrapper


def instrument() -> Any:
    """Wrap each phase's function; return the WSGI handler."""
    from django.core.handlers import base
    from django.core.handlers.wsgi import WSGIHandler
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from ratelimit_tiers import middleware, throttling
    from ratelimit_tiers.authentication import APIKeyAuthentication
    from ratelimit_tiers.exceptions import RateLimited
    from ratelimit_tiers.storage.redis import RedisStorage

    whole, cpu, initial, auth, throttle, store, refused, body, handler, warning, rendering, headers = PHASES
    WSGIHandler.__call__ = timed(cpu, WSGIHandler.__call__, time.process_time)  # type: ignore[method-assign]
    WSGIHandler.__call__ = timed(whole, WSGIHandler.__call__)  # type: ignore[method-assign]
    APIView.initial = timed(initial, APIView.initial)  # type: ignore[method-assign]
    APIKeyAuthentication.authenticate = timed(auth, APIKeyAuthentication.authenticate)  # type: ignore[method-assign]
    throttling.TierRateThrottle.allow_request = timed(throttle, throttling.TierRateThrottle.allow_request)  # type: ignore[method-assign]
    RedisStorage.hit = timed(store, RedisStorage.hit)  # type: ignore[method-assign]
    throttling.send_refused = timed(refused, throttling.send_refused)
    RateLimited.__init__ = timed(body, RateLimited.__init__)  # type: ignore[method-assign]
    APIView.handle_exception = timed(handler, APIView.handle_exception)  # type: ignore[method-assign]
    base.log_response = timed(warning, base.log_response)
    Response.rendered_content = property(timed(rendering, Response.rendered_content.fget))  # type: ignore[attr-defined, method-assign]
    middleware.add_headers = timed(headers, middleware.add_headers)
    return WSGIHandler()


def get(handler: Any, path: str, authorization: str | None) -> int:
    """One GET through the WSGI handler, as gunicorn sends it; its status code."""
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
    }
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    statuses: list[str] = []
    body = handler(environ, lambda status, headers: statuses.append(status))
    b"".join(body)
    body.close()
    return int(statuses[0][:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per kind and round")
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        redis, url = start_redis(directory)
        try:
            setup_django(url, directory)
            measure(options.requests, options.rounds)
        finally:
            redis.kill()
            redis.wait()


def measure(requests: int, rounds: int) -> None:
    from e2e import LIMIT, WINDOW

    # As in a gunicorn worker: the testproject's LOGGING (setup_django quiets both for the other benchmarks).
    logging.getLogger("ratelimit_tiers").setLevel(logging.INFO)
    logging.getLogger("django.request").setLevel(logging.NOTSET)
    for stream_handler in logging.getLogger("ratelimit_tiers").handlers:
        stream_handler.setStream(open(os.devnull, "w"))  # type: ignore[attr-defined]  # noqa: SIM115
    handler = instrument()
    admitted = f"Api-Key {new_key(LIMIT, 'exact', window=WINDOW)[1]}"
    exhausted = f"Api-Key {new_key(1, 'exact', window=3600)[1]}"
    kinds = {
        "bare view": ("/bare/", None, 200),
        "ours, admitted (200)": ("/ours/", admitted, 200),
        "ours, 429 served locally, through DRF": ("/ours-drf/", exhausted, 429),
        "ours, 429 answered early (before DRF)": ("/ours/", exhausted, 429),
    }
    assert get(handler, "/ours/", exhausted) == 200  # Its only admission: refused from now on.
    samples: dict[str, defaultdict[str, list[float]]] = {kind: defaultdict(list) for kind in kinds}
    for number in range(rounds + 1):  # The first round warms up.
        for kind, (path, authorization, expected) in kinds.items():
            _spent.clear()
            for _ in range(requests):
                status = get(handler, path, authorization)
                if status != expected:
                    raise RuntimeError(f"{kind}: {status}, expected {expected}")
            for phase, seconds in _spent.items():
                if number:
                    samples[kind][phase].append(seconds / requests * 1e6)
    print(
        f"µs per request, median of {rounds} rounds of {requests} requests per kind, kinds alternating; "
        "through Django's WSGI handler in one process (no HTTP):\n"
    )
    rows = [
        [
            phase,
            *[
                f"{statistics.median(samples[kind][phase]):.0f}" if samples[kind][phase] else "-"
                for kind in kinds
            ],
        ]
        for phase in PHASES
    ]
    print(table(["phase", *kinds], rows) + "\n")


if __name__ == "__main__":
    main()
