from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ratelimit_tiers.breaker import CircuitBreaker, get_breaker, guarded
from ratelimit_tiers.exceptions import CircuitOpen, StorageUnavailable
from tests.conftest import URL


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def down():
    raise StorageUnavailable("down")


def up():
    return "ok"


def fail_times(breaker, count):
    for _ in range(count):
        with pytest.raises(StorageUnavailable) as info:
            breaker.call(down)
        assert not isinstance(info.value, CircuitOpen)


def test_opens_after_consecutive_failures_and_skips_the_store(settings):
    settings.RATELIMIT_TIERS_BREAKER_FAILURES = 3
    breaker = CircuitBreaker("x", Clock())
    fail_times(breaker, 2)
    assert breaker.call(up) == "ok"  # A success resets the count.
    fail_times(breaker, 2)
    assert not breaker.is_open
    fail_times(breaker, 1)
    assert breaker.is_open
    calls = []
    for _ in range(50):
        with pytest.raises(CircuitOpen):
            breaker.call(lambda: calls.append(1))
    assert calls == []


def test_guarded_calls_go_through_the_breaker_of_the_configured_cache(settings):
    settings.RATELIMIT_TIERS_BREAKER_FAILURES = 3
    assert guarded(up) == "ok"  # Through the default cache's breaker, which guarded() keeps.
    settings.RATELIMIT_TIERS_CACHE = "other"  # Forgets it: now through that cache's.
    for _ in range(3):
        with pytest.raises(StorageUnavailable):
            guarded(down)
    assert get_breaker("other").is_open
    assert not get_breaker("default").is_open


def test_half_open_probe_closes_or_reopens(settings):
    settings.RATELIMIT_TIERS_BREAKER_FAILURES = 3
    settings.RATELIMIT_TIERS_BREAKER_COOLDOWN = 5
    clock = Clock()
    breaker = CircuitBreaker("x", clock)
    fail_times(breaker, 3)
    clock.now += 4.9
    with pytest.raises(CircuitOpen):
        breaker.call(up)
    clock.now += 0.2
    fail_times(breaker, 1)  # The probe fails: open for another cool-down at once.
    with pytest.raises(CircuitOpen):
        breaker.call(up)
    clock.now += 5
    assert breaker.call(up) == "ok"  # The probe succeeds: closed.
    assert not breaker.is_open
    fail_times(breaker, 2)
    assert not breaker.is_open


def test_only_one_probe_at_a_time(settings):
    settings.RATELIMIT_TIERS_BREAKER_COOLDOWN = 5
    clock = Clock()
    breaker = CircuitBreaker("x", clock)
    fail_times(breaker, 3)
    clock.now += 5
    inside = []

    def probe():
        # While the probe is in flight, everyone else is skipped.
        with pytest.raises(CircuitOpen):
            breaker.call(up)
        inside.append(1)
        return "probed"

    assert breaker.call(probe) == "probed"
    assert inside == [1]
    assert breaker.call(up) == "ok"


def test_a_non_store_error_in_the_probe_gives_no_verdict():
    clock = Clock()
    breaker = CircuitBreaker("x", clock)
    fail_times(breaker, 3)
    clock.now += 5

    def broken():
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        breaker.call(broken)
    assert breaker.is_open
    assert breaker.call(up) == "ok"  # The next request may probe at once.


def test_zero_failures_disables_it(settings):
    settings.RATELIMIT_TIERS_BREAKER_FAILURES = 0
    breaker = CircuitBreaker("x", Clock())
    fail_times(breaker, 20)
    assert not breaker.is_open


def test_thread_safe_under_concurrent_failures(settings):
    settings.RATELIMIT_TIERS_BREAKER_FAILURES = 3
    settings.RATELIMIT_TIERS_BREAKER_COOLDOWN = 60
    breaker = CircuitBreaker("x")
    attempts = []
    lock = threading.Lock()

    def failing():
        with lock:
            attempts.append(1)
        time.sleep(0.001)
        raise StorageUnavailable("down")

    def one(_):
        try:
            breaker.call(failing)
        except CircuitOpen:
            return "skipped"
        except StorageUnavailable:
            return "failed"
        return "ok"

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(2000)))
    assert results.count("failed") == len(attempts)
    # Only calls that started before the breaker opened reached the store. Failures
    # of calls in flight together count once, so opening takes three rounds of at
    # most one call per thread (16 x 3), plus calls racing the opening itself.
    assert len(attempts) < 16 * 4
    assert results.count("skipped") == 2000 - len(attempts)


def test_failures_in_flight_together_count_once(settings):
    """One stall times out every call in flight at once: that is one failure, not sixteen."""
    settings.RATELIMIT_TIERS_BREAKER_FAILURES = 3
    breaker = CircuitBreaker("x")

    def stall():
        barrier = threading.Barrier(16)

        def stalled():
            barrier.wait(timeout=10)  # All 16 calls are in flight before any fails.
            raise StorageUnavailable("timeout")

        def one(_):
            with pytest.raises(StorageUnavailable) as info:
                breaker.call(stalled)
            return isinstance(info.value, CircuitOpen)

        with ThreadPoolExecutor(16) as pool:
            assert not any(pool.map(one, range(16)))

    stall()
    stall()
    assert not breaker.is_open  # Two stalls, 32 timeouts: two failures.
    stall()
    assert breaker.is_open  # The third in a row opens it.


def test_a_success_older_than_the_last_failure_does_not_reset_the_count(settings):
    settings.RATELIMIT_TIERS_BREAKER_FAILURES = 3
    clock = Clock()
    breaker = CircuitBreaker("x", clock)

    def slow():
        clock.now += 1
        fail_times(breaker, 2)  # Started and failed while this call was waiting for its reply.
        return "late"

    assert breaker.call(slow) == "late"  # Its reply says nothing about the store since then.
    fail_times(breaker, 1)
    assert breaker.is_open
    clock.now += 5
    assert breaker.call(up) == "ok"  # The probe started after the failure: it closes the breaker.
    assert not breaker.is_open


class Blackhole:
    """A TCP port that accepts connections and never answers: a hung Redis."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def hung_redis(settings):
    hole = Blackhole()
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{hole.port}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.1, "SOCKET_TIMEOUT": 0.1},
        }
    }
    yield hole
    hole.close()


def test_a_hung_store_costs_three_timeouts_then_nothing(api, hung_redis, settings, caplog):
    settings.RATELIMIT_TIERS_BREAKER_COOLDOWN = 60
    caplog.set_level(logging.WARNING, "ratelimit_tiers")
    durations = []
    opened_after = connections_when_opened = None
    for i in range(30):
        started = time.perf_counter()
        response = api.get(URL)
        durations.append(time.perf_counter() - started)
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response  # Unknown, so not invented.
        if opened_after is None and get_breaker().is_open:
            opened_after, connections_when_opened = i + 1, len(hung_redis.accepted)
    # Three requests waited for the 0.1 s socket timeout; the rest never touched the store.
    assert opened_after == 3
    assert len(hung_redis.accepted) == connections_when_opened
    assert sum(durations[3:]) < sum(durations[:3])
    assert sum("skipping it for 60 s" in r.getMessage() for r in caplog.records) == 1
    print(
        f"hung store: first 3 requests {[round(d * 1000) for d in durations[:3]]} ms, then "
        f"max {max(durations[3:]) * 1000:.1f} ms"
    )


def test_fail_closed_with_the_breaker_open_is_a_503(api, hung_redis, settings):
    settings.RATELIMIT_TIERS_FAIL_OPEN = False
    statuses = {api.get(URL).status_code for _ in range(3)}
    assert get_breaker().is_open
    connections = len(hung_redis.accepted)
    statuses |= {api.get(URL).status_code for _ in range(10)}
    assert statuses == {503}
    response = api.get(URL)
    assert int(response["Retry-After"]) >= 1
    assert response.json()["code"] == "ratelimit_unavailable"
    assert len(hung_redis.accepted) == connections
