"""What kind of cache an alias is, and the Redis client it already has.

The one place that knows the Redis cache backends: django-redis (an optional
extra) and Django's own ``django.core.cache.backends.redis.RedisCache``. Both
keep a redis-py connection pool; the storage uses that pool's client, never a
pool of its own.
"""

from __future__ import annotations

from typing import Any

from django.core.cache import caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.redis import RedisCache as BuiltinRedisCache
from django.core.exceptions import ImproperlyConfigured

try:
    from django_redis.cache import RedisCache as DjangoRedisCache
except ImportError:  # pragma: no cover - django-redis is an optional extra.
    DjangoRedisCache = None

#: Kinds of cache, each with its own default storage.
REDIS = "redis"
DUMMY = "dummy"
OTHER = "other"


def cache_kind(alias: str) -> str:
    """:data:`REDIS` for django-redis and Django's built-in Redis cache, :data:`DUMMY`, else :data:`OTHER`."""
    cache = caches[alias]
    if isinstance(cache, BuiltinRedisCache) or (
        DjangoRedisCache is not None and isinstance(cache, DjangoRedisCache)
    ):
        return REDIS
    if isinstance(cache, DummyCache):
        return DUMMY
    return OTHER


def redis_client(alias: str) -> Any:
    """The redis-py client for writes of the cache ``alias``, on the backend's own pool.

    django-redis: its client's master (plain or Sentinel). Django's built-in
    backend: the first server of its ``LOCATION``, where it writes.
    """
    cache = caches[alias]
    if DjangoRedisCache is not None and isinstance(cache, DjangoRedisCache):
        return cache.client.get_client(write=True)
    if isinstance(cache, BuiltinRedisCache):
        return cache._cache.get_client(None, write=True)
    raise ImproperlyConfigured(f"The cache {alias!r} is not a Redis cache: RedisStorage cannot use it.")
