"""Whether the limiter's Redis may evict its keys under memory pressure.

Every key the limiter writes carries an expiry, so under any
``maxmemory-policy`` but ``noeviction`` (``allkeys-*`` and ``volatile-*``
alike) a Redis that reaches ``maxmemory`` may drop counters, and a key whose
counter was dropped gets its whole limit again: limits lift, silently. With
``noeviction`` the script's write fails instead (an ``OOM`` error reply), which
is a store failure: the fail-open or fail-closed policy applies and is logged.

Checked by ``manage.py check --deploy`` (``ratelimit_tiers.W005``) and once per
process at run time, on the first connection the storage opens. Both ask the
server with a short timeout and no retries, and say nothing when they cannot
tell: managed services may refuse ``CONFIG``, so ``INFO memory`` is the
fallback, and a Redis that is down is other checks' business.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError
from redis.retry import Retry

logger = logging.getLogger("ratelimit_tiers")

SAFE_POLICY = "noeviction"
#: Seconds the probe waits to connect and for each reply, at most (less if the cache's are shorter).
PROBE_TIMEOUT = 0.5

_checked: set[tuple[int, str]] = set()
_lock = threading.Lock()


def eviction_policy(client: Any) -> str | None:
    """The ``maxmemory-policy`` of the Redis behind a redis-py ``client``; ``None`` if unknown."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    for name in ("socket_timeout", "socket_connect_timeout"):
        kwargs[name] = min(kwargs.get(name) or PROBE_TIMEOUT, PROBE_TIMEOUT)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    connection = pool.connection_class(**kwargs)
    try:
        try:
            connection.send_command("CONFIG", "GET", "maxmemory-policy")
            _name, value = connection.read_response(disable_decoding=True)
        except ResponseError:  # CONFIG refused or renamed (managed Redis): INFO reports it too.
            connection.send_command("INFO", "memory")
            lines = connection.read_response(disable_decoding=True).splitlines()
            value = next(line for line in lines if line.startswith(b"maxmemory_policy:")).split(b":", 1)[1]
        return str(value.decode().strip())
    except Exception:  # Unreachable, or an answer of another shape: no verdict.
        return None
    finally:
        connection.disconnect()


def evicting_message(alias: str, policy: str) -> str:
    return (
        f"The rate-limit cache {alias!r} is on a Redis whose maxmemory-policy is {policy!r}: "
        "at maxmemory it may evict the limiter's keys (all have expiries), and a key whose "
        "counter is evicted gets its whole limit again."
    )


EVICTING_HINT = (
    "Give RATELIMIT_TIERS_CACHE a Redis (or database) with maxmemory-policy noeviction and enough memory."
)


def warn_if_evicting(alias: str, client: Any) -> None:
    """Log a warning if the cache's Redis may evict keys: once per process and alias."""
    with _lock:
        if (os.getpid(), alias) in _checked:
            return
        _checked.add((os.getpid(), alias))
    policy = eviction_policy(client)
    if policy is not None and policy != SAFE_POLICY:
        logger.warning("%s %s", evicting_message(alias, policy), EVICTING_HINT)


@receiver(setting_changed, dispatch_uid="rlt_eviction_setting_changed")
def _reset(setting: str, **kwargs: Any) -> None:
    if setting == "CACHES" or setting.startswith("RATELIMIT_TIERS_"):
        with _lock:
            _checked.clear()
