"""Storage backends. :func:`get_storage` picks the one for the configured cache."""

from __future__ import annotations

import functools
from typing import Any

from django.core.cache import caches
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from ratelimit_tiers.conf import conf
from ratelimit_tiers.storage.base import Outcome, Storage

__all__ = ["Outcome", "Storage", "get_storage"]


def get_storage() -> Storage:
    """The storage for ``RATELIMIT_TIERS_STORAGE`` or, by default, for the cache backend."""
    return _storage(conf.STORAGE, conf.CACHE)


def is_redis_cache(alias: str) -> bool:
    try:
        from django_redis.cache import RedisCache
    except ImportError:  # pragma: no cover - django-redis is an optional extra.
        return False
    return isinstance(caches[alias], RedisCache)


@functools.cache
def _storage(path: str | None, alias: str) -> Storage:
    if path:
        cls = import_string(path)
    elif is_redis_cache(alias):
        from ratelimit_tiers.storage.redis import RedisStorage as cls
    else:
        from ratelimit_tiers.storage.cache import CacheStorage as cls
    return cls(alias)  # type: ignore[no-any-return]


@receiver(setting_changed, dispatch_uid="rlt_storage_setting_changed")
def _reset(setting: str, **kwargs: Any) -> None:
    if setting == "CACHES" or setting.startswith("RATELIMIT_TIERS_"):
        _storage.cache_clear()
