"""A per-process circuit breaker in front of the rate-limit store.

A dead Redis answers in milliseconds (connection refused), but one that is
unreachable costs a socket timeout on every request. After
``RATELIMIT_TIERS_BREAKER_FAILURES`` failures in a row the breaker opens:
for ``RATELIMIT_TIERS_BREAKER_COOLDOWN`` seconds every call fails at once with
:class:`~ratelimit_tiers.errors.CircuitOpen` (so the fail-open or
fail-closed policy applies without touching the network). Then one request,
the probe, is let through: success closes the breaker, failure opens it for
another cool-down. Requests arriving while the probe is in flight are skipped.

"In a row" is ordered by when each call *started*, not by when it failed.
A failure counts only if its call started after the last counted failure was
recorded; one that was already in flight then shares that failure's cause
(one stall, one timeout) and adds nothing. So in a threaded or async server
the 16 calls that one 150 ms pause makes time out together count once, as
they would in a single-threaded one, and opening takes ``FAILURES`` failures
one after another: a hung store opens the breaker after ``FAILURES`` socket
timeouts (0.3 s with 3 and 0.1 s), a refusing one after ``FAILURES`` quick
refusals, and a pause shorter than ``FAILURES`` socket timeouts never.
Successes follow the same rule: only a call that started after the last
counted failure proves the store is back and resets the count. (Before,
every concurrent failure counted, and one short pause under gunicorn's
threaded workers switched limiting off for the whole cool-down; see
``tests/test_stall.py``.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.signals import setting_changed
from django.dispatch import receiver

from ratelimit_tiers.conf import conf
from ratelimit_tiers.errors import CircuitOpen, StorageUnavailable

logger = logging.getLogger("ratelimit_tiers")

T = TypeVar("T")


class CircuitBreaker:
    """Closed, open or half-open; thread-safe. Settings are read on each call."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._failed_at = float("-inf")  # When the last counted failure was recorded.
        self._opened_at: float | None = None
        self._probe_started: float | None = None

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Return ``function(*args)`` unless the breaker is open.

        Raises :class:`CircuitOpen` without calling it while open, and
        re-raises the :class:`StorageUnavailable` that ``function`` raises.
        A healthy breaker takes no lock: it only reads its state.
        """
        if self._opened_at is not None:
            self._before()
        started = self.clock()
        try:
            result = function(*args)
        except StorageUnavailable:
            self._failed(started)
            raise
        except BaseException:
            if self._probe_started is not None:
                self._release()  # Not the store's fault (e.g. a database error): no verdict.
            raise
        if self._failures or self._opened_at is not None:
            self._succeeded(started)
        return result

    def _before(self) -> None:
        with self._lock:
            if self._opened_at is None:
                return
            now = self.clock()
            cooldown = float(conf.BREAKER_COOLDOWN)
            if now - self._opened_at < cooldown:
                raise CircuitOpen(f"store skipped for {cooldown:g} s after repeated failures")
            if self._probe_started is not None and now - self._probe_started < cooldown:
                raise CircuitOpen("store skipped while a probe is in flight")
            self._probe_started = now  # This call is the probe.

    def _failed(self, started: float) -> None:
        with self._lock:
            probing = self._probe_started is not None and started >= self._probe_started
            if started < self._failed_at and not probing:
                return  # In flight when the last counted failure was recorded: the same episode.
            self._probe_started = None
            self._failures += 1
            self._failed_at = self.clock()
            threshold = conf.BREAKER_FAILURES
            if threshold > 0 and (probing or self._failures >= threshold):
                if self._opened_at is None:
                    logger.warning(
                        "Rate-limit store %r failed %d times in a row; skipping it for %g s.",
                        self.name,
                        self._failures,
                        float(conf.BREAKER_COOLDOWN),
                    )
                self._opened_at = self._failed_at

    def _succeeded(self, started: float) -> None:
        with self._lock:
            if started < self._failed_at:
                return  # Older news than the last counted failure: it proves nothing.
            if self._opened_at is not None:
                logger.warning("Rate-limit store %r is back; limiting again.", self.name)
            self._failures = 0
            self._opened_at = None
            self._probe_started = None

    def _release(self) -> None:
        with self._lock:
            self._probe_started = None


_breakers: dict[str, CircuitBreaker] = {}
_registry_lock = threading.Lock()
#: The breaker of ``RATELIMIT_TIERS_CACHE``, once looked up: what every check goes through.
_configured: CircuitBreaker | None = None


def get_breaker(alias: str | None = None) -> CircuitBreaker:
    """The process's breaker for a cache alias (default ``RATELIMIT_TIERS_CACHE``)."""
    alias = conf.CACHE if alias is None else alias
    breaker = _breakers.get(alias)
    if breaker is None:
        with _registry_lock:
            breaker = _breakers.setdefault(alias, CircuitBreaker(alias))
    return breaker


def guarded(function: Callable[..., T], *args: Any) -> T:
    """Return ``function(*args)``, called through the configured cache's breaker."""
    global _configured
    breaker = _configured
    if breaker is None:  # Settings are read once, not on every check: reset() forgets it.
        breaker = _configured = get_breaker()
    return breaker.call(function, *args)


def reset() -> None:
    """Forget every breaker's state (tests; a configuration change)."""
    global _configured
    with _registry_lock:
        _breakers.clear()
        _configured = None


@receiver(setting_changed, dispatch_uid="rlt_breaker_setting_changed")
def _reset(setting: str, **kwargs: Any) -> None:
    if setting == "CACHES" or setting.startswith("RATELIMIT_TIERS_"):
        reset()
