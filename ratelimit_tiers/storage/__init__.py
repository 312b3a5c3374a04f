"""Storage backends. :func:`get_storage` picks the one for the configured cache."""

from __future__ import annotations

import functools
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from ratelimit_tiers.conf import conf
from ratelimit_tiers.storage.backends import DUMMY, OTHER, REDIS, cache_kind
from ratelimit_tiers.storage.base import Outcome, Storage, Unusable, Verdict

__all__ = ["Outcome", "Storage", "Unusable", "Verdict", "get_storage"]


def get_storage() -> Storage:
    """The storage for ``RATELIMIT_TIERS_STORAGE`` or, by default, for the cache backend."""
    global _current
    storage = _current
    if storage is None:  # Settings are read once, not on every check: a settings change forgets it.
        storage = _current = _storage(conf.STORAGE, conf.CACHE)
    return storage


_current: Storage | None = None


#: The storage for each kind of cache (see ``backends``) unless ``RATELIMIT_TIERS_STORAGE`` names one.
#: Paths, imported when chosen: ``RedisStorage`` needs redis-py, an optional extra.
DEFAULT_STORAGES = {
    REDIS: "ratelimit_tiers.storage.redis.RedisStorage",
    DUMMY: "ratelimit_tiers.storage.dummy.DummyStorage",
    OTHER: "ratelimit_tiers.storage.cache.CacheStorage",
}


@functools.cache
def _storage(path: str | None, alias: str) -> Storage:
    cls = import_string(path or DEFAULT_STORAGES[cache_kind(alias)])
    return cls(alias)  # type: ignore[no-any-return]


@receiver(setting_changed, dispatch_uid="rlt_storage_setting_changed")
def _reset(setting: str, **kwargs: Any) -> None:
    global _current
    if setting == "CACHES" or setting.startswith("RATELIMIT_TIERS_"):
        _storage.cache_clear()
        _current = None
