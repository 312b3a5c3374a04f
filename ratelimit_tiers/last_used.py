"""``APIKey.last_used``, written at most about once a minute per key, never per request.

Best effort: neither a store outage nor a database outage fails a request for it.
"""

from __future__ import annotations

import logging
import threading
import time

from django.core.cache import caches
from django.db import DatabaseError
from django.utils import timezone

from ratelimit_tiers.conf import conf
from ratelimit_tiers.models import APIKey
from ratelimit_tiers.names import used_key

logger = logging.getLogger("ratelimit_tiers")

#: Seconds between two writes of a key's ``last_used``.
INTERVAL = 60
#: Seconds between two warnings of a process about writes the database refused.
WARNING_INTERVAL = 60

# Per process: prefix -> monotonic time of its last look at the shared marker.
# Keeps the warm path free of store round trips too, not only of SQL.
_seen: dict[str, float] = {}
_lock = threading.Lock()
_last_warning = -float(WARNING_INTERVAL)


def record(key_id: int, prefix: str) -> None:
    """Note that the key was used; one process per minute wins and runs one ``UPDATE``."""
    now = time.monotonic()
    if now - _seen.get(prefix, -INTERVAL) < INTERVAL:
        return  # Every request but one a minute: no lock (a dict read is atomic).
    with _lock:
        if now - _seen.get(prefix, -INTERVAL) < INTERVAL:
            return
        if len(_seen) >= 100_000:
            _seen.clear()
        _seen[prefix] = now
    try:
        # The shared marker makes it once a minute across processes, not once per process.
        first = caches[conf.CACHE].add(used_key(prefix), 1, INTERVAL)
    except Exception:  # A store outage must not fail the request for a timestamp.
        return
    if not first:
        return
    try:
        APIKey.objects.filter(pk=key_id).update(last_used=timezone.now())
    except DatabaseError as exc:  # Nor must a database outage: the timestamp is not worth a 500.
        _warn(exc)


def _warn(exc: DatabaseError) -> None:
    global _last_warning
    now = time.monotonic()
    with _lock:
        if now - _last_warning < WARNING_INTERVAL:
            return
        _last_warning = now
    logger.warning("Could not record API key use (%s); the request goes on.", exc)


def forget() -> None:
    """Drop this process's memory of recent writes (tests)."""
    global _last_warning
    with _lock:
        _seen.clear()
        _last_warning = -float(WARNING_INTERVAL)
