"""Redis Cluster, through redis-py's cluster client (django-redis has none).

Configure with ``RATELIMIT_TIERS_STORAGE = "ratelimit_tiers.storage.cluster.RedisClusterStorage"``
and ``RATELIMIT_TIERS_REDIS_CLUSTER``: the URL of any node, or ``RedisCluster``
keyword arguments (``startup_nodes`` may be ``(host, port)`` pairs).
``RATELIMIT_TIERS_CACHE`` still names the cache whose ``KEY_PREFIX`` and
``VERSION`` shape the keys.
"""

from __future__ import annotations

import threading
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError
from redis.retry import Retry

from ratelimit_tiers.conf import conf
from ratelimit_tiers.storage.base import wrap_errors
from ratelimit_tiers.storage.redis import SCRIPT, SCRIPT_SHA, RedisStorage
from ratelimit_tiers.storage.transport import ScriptCall

#: Applied unless the setting says otherwise: a dead node must cost
#: milliseconds, not redis-py's default retries with exponential backoff.
DEFAULTS: dict[str, Any] = {"socket_timeout": 0.1, "socket_connect_timeout": 0.1}

_clients: dict[str, RedisCluster] = {}
_lock = threading.Lock()


def hash_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: the first non-empty ``{...}``, else all of it."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else key


def build_client(config: str | dict[str, Any]) -> RedisCluster:
    kwargs = {**DEFAULTS, **({"url": config} if isinstance(config, str) else config)}
    nodes = kwargs.get("startup_nodes")
    if nodes:
        kwargs["startup_nodes"] = [n if isinstance(n, ClusterNode) else ClusterNode(*n) for n in nodes]  # type: ignore[no-untyped-call]
    # One immediate retry lets the client follow a failover (it refreshes the
    # slot map on a connection error); no backoff sleeps.
    kwargs.setdefault("retry", Retry(NoBackoff(), 1))
    return RedisCluster(**kwargs)


class RedisClusterStorage(RedisStorage):
    """:class:`RedisStorage` on a Redis Cluster.

    Every key of one check carries the API key prefix as its hash tag
    (``rlt:{prefix}:...``), so the script's keys share a slot and run on one
    node; evicting many policies sends one ``DEL`` per key, never a
    multi-key command across slots.
    """

    def client(self) -> RedisCluster:
        config = conf.REDIS_CLUSTER
        if config is None:
            raise ImproperlyConfigured("RedisClusterStorage needs RATELIMIT_TIERS_REDIS_CLUSTER.")
        name = repr(config)
        client = _clients.get(name)
        if client is None:
            with _lock:
                client = _clients.get(name)
                if client is None:
                    # Connects to discover the slots: raises while the cluster is
                    # unreachable (wrapped by the caller), and is not kept then.
                    client = _clients[name] = build_client(config)
        return client

    def make_key(self, key: str) -> str:
        full = super().make_key(key)
        if hash_tag(full) != hash_tag(key):
            raise ImproperlyConfigured(
                f"The cache {self.alias!r} makes keys whose hash tag is not the API key's "
                "(braces in KEY_PREFIX or KEY_FUNCTION?): checks would cross slots."
            )
        return full

    def _run(self, call: ScriptCall) -> bytes:
        # The cluster client's own evalsha: it routes by the keys' slot and
        # follows MOVED and failovers.
        with wrap_errors():
            client = self.client()
            try:
                reply = client.evalsha(SCRIPT_SHA, len(call.keys), *call.keys, *call.args)
            except NoScriptError:
                client.script_load(SCRIPT)
                reply = client.evalsha(SCRIPT_SHA, len(call.keys), *call.keys, *call.args)
        # Typed by redis-py as str or an awaitable; a synchronous client without decoding gives bytes.
        return cast("bytes", reply)


def close_clients() -> None:
    """Close and forget every cluster client of this process."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
