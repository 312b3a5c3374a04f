"""``DummyCache``: nothing can be counted, so every check fails as an outage, said once per process."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from ratelimit_tiers.algorithms import Decision, Rate
from ratelimit_tiers.conf import conf
from ratelimit_tiers.errors import StorageUnavailable
from ratelimit_tiers.storage.base import Outcome, Storage

logger = logging.getLogger("ratelimit_tiers")

#: The process that last logged the error (one error per process, forked workers included).
_logged_in: int | None = None


class DummyStorage(Storage):
    """The storage for Django's ``DummyCache``, which keeps nothing: no check can be decided.

    Every check raises :class:`StorageUnavailable`, so the throttle applies
    ``RATELIMIT_TIERS_FAIL_OPEN`` (admit without headers, or answer 503)
    instead of admitting everything with invented counts. Servers such as
    gunicorn and uvicorn run no system checks, so the first check of each
    process logs the misconfiguration (``ratelimit_tiers.E009``) as an error.
    Clearing and forgetting succeed: there is nothing to remove.
    """

    def hit(self, prefix: str, account: int, category: str, cost: int = 1) -> Outcome:
        raise self._unavailable()

    def peek(self, prefix: str, account: int, category: str, cost: int = 1) -> Outcome:
        raise self._unavailable()

    def hit_rate(self, name: str, rate: Rate) -> Decision:
        raise self._unavailable()

    def clear(self, prefix: str, account: int, categories: Iterable[str]) -> None:
        pass

    def forget(self, keys: Iterable[tuple[str, int]]) -> None:
        pass

    def _unavailable(self) -> StorageUnavailable:
        global _logged_in
        message = f"the cache {self.alias!r} is a DummyCache, which stores nothing"
        if _logged_in != os.getpid():
            _logged_in = os.getpid()
            logger.error(
                "Rate limits cannot be enforced: %s (ratelimit_tiers.E009). Every request is %s. "
                "Point RATELIMIT_TIERS_CACHE at a Redis or another shared cache.",
                message,
                "admitted without X-RateLimit-* headers" if conf.FAIL_OPEN else "answered 503",
            )
        return StorageUnavailable(message)
