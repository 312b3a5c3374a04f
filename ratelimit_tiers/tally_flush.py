"""Sends the refusal tally's batches that no check carried to the ledger: once a second, and at exit.

See :mod:`~ratelimit_tiers.refusal_tally`. The thread starts in each process
at its first local refusal; a batch waits :data:`~ratelimit_tiers.refusal_tally.STALE_SECONDS`
for a check of its key to carry it first (in a flood, the one that renews the
refusal), so a flood costs the store no command more.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from ratelimit_tiers.conf import conf
from ratelimit_tiers.errors import StorageUnavailable
from ratelimit_tiers.refusal_tally import STALE_SECONDS, tally
from ratelimit_tiers.storage import get_storage

logger = logging.getLogger("ratelimit_tiers")

#: Seconds between two looks at the tally.
INTERVAL = 1.0
#: Seconds a batch waits at most (``rollup.GRACE_SECONDS`` is far longer).
MAX_WAIT = 30.0

_pid = 0
_lock = threading.Lock()


def ensure_running() -> None:
    """Start this process's flushing thread, unless it runs (a forked child starts its own)."""
    global _pid
    if _pid == os.getpid():
        return
    with _lock:
        if _pid != os.getpid():
            _pid = os.getpid()
            threading.Thread(target=_run, name="ratelimit-tiers-tally", daemon=True).start()


def flush(age: float = 0) -> int:
    """Send the batches that waited ``age`` seconds or more (all with 0); how many were sent.

    A batch the store does not take is dropped with a warning: it may have
    been counted (a timeout after the write), and nothing is counted twice.
    """
    sent = 0
    for key, refusals in tally.take_stale(age):
        try:
            get_storage().add_refusals(key, refusals)
            sent += 1
        except StorageUnavailable as exc:
            lost = sum(refusal.n for refusal in refusals)
            logger.warning("Usage ledger: %d local refusals of %s not counted: %s", lost, key.prefix, exc)
    return sent


def stale_after() -> float:
    """Seconds a batch waits for a check to carry it: past a local refusal's life and its renewal.

    At most :data:`MAX_WAIT`, well inside the rollup's grace after an hour ends.
    """
    return min(max(STALE_SECONDS, conf.LOCAL_REFUSAL_SECONDS + 1), MAX_WAIT)


def _run() -> None:
    while True:
        time.sleep(INTERVAL)
        tick()


def tick() -> None:
    """One round of the flushing thread; an error is logged, never the end of the thread."""
    try:
        flush(stale_after())
    except Exception:  # The thread must outlive any one round (a bad setting, a database error).
        logger.exception("Usage ledger: flushing local refusals failed; trying again in %s s", INTERVAL)


atexit.register(flush)
