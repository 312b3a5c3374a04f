"""The app's own errors, which know nothing of HTTP: what the store and its circuit breaker raise.

And :func:`wrap_errors`, which turns whatever a store's backend raises into one of them.

Apart from :mod:`~ratelimit_tiers.exceptions` (DRF's HTTP answers, which also
exports these), so that the storage imports nothing from DRF.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class RatelimitTiersError(Exception):
    """Base class of this app's errors."""


class StorageUnavailable(RatelimitTiersError):
    """The rate-limit store could not be reached or answered nonsense."""


class CircuitOpen(StorageUnavailable):
    """The store failed repeatedly and is being skipped for a cool-down (see ``breaker``)."""


class CostExceedsLimit(RatelimitTiersError):
    """A request costs more than one of its rules can ever admit (``ratelimit_cost`` > the count)."""

    def __init__(self, cost: int, count: int, rule: str) -> None:
        super().__init__(f"the request costs {cost}, more than the {count} of rule {rule!r}")
        self.cost, self.count, self.rule = cost, count, rule


@contextmanager
def wrap_errors() -> Iterator[None]:
    """Raise what a store's backend raised as :class:`StorageUnavailable`."""
    try:
        yield
    except StorageUnavailable:
        raise
    except Exception as exc:  # Backends raise anything: redis, pymemcache, OSError...
        raise StorageUnavailable(f"{type(exc).__name__}: {exc}") from exc
