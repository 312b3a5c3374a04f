from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from django.core.cache import caches
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from ratelimit_tiers.algorithms import COUNTER, EXACT, READ, Decision, Rate
from ratelimit_tiers.conf import conf
from ratelimit_tiers.errors import StorageUnavailable
from ratelimit_tiers.names import ACTIVE, bucket_key, policy_key
from ratelimit_tiers.policies import Policy, load_policy
from ratelimit_tiers.storage import base
from ratelimit_tiers.storage.backends import redis_client
from ratelimit_tiers.storage.base import Outcome, Storage, wrap_errors
from ratelimit_tiers.storage.eviction import warn_if_evicting

SCRIPT = (Path(__file__).parent / "scripts" / "hit.lua").read_bytes()
SCRIPT_SHA = hashlib.sha1(SCRIPT).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1.
GIVE_BACK_SCRIPT = (Path(__file__).parent / "scripts" / "give_back.lua").read_text()

Arg = str | int | float
#: Checks whose encoded script call each storage keeps: (API key, category, hit or peek).
CALL_CACHE_SIZE = 8192
#: Connections each storage opens and keeps for its checks; more at once borrow from the pool.
KEPT_CONNECTIONS = 8


def encode_command(*parts: bytes | Arg) -> bytes:
    """One command in the Redis protocol (RESP): an array of bulk strings."""
    encoded = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        encoded.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(encoded)


class ScriptCall(NamedTuple):
    """The script's keys and arguments, and the EVALSHA that sends them, encoded once."""

    keys: tuple[str, ...]
    args: tuple[Arg, ...]
    command: bytes

    @classmethod
    def of(cls, keys: Sequence[str], args: Sequence[Arg]) -> ScriptCall:
        return cls(tuple(keys), tuple(args), encode_command("EVALSHA", SCRIPT_SHA, len(keys), *keys, *args))


def flatten(fields: dict[str, Arg]) -> tuple[Arg, ...]:
    return tuple(x for item in fields.items() for x in item)


class RedisStorage(Storage):
    """Exact sliding log or sliding-window counter in one Lua script per check.

    The script reads the key's policy and applies it in the same round trip,
    using the Redis server's clock (``TIME``), so app servers with skewed
    clocks agree. Works on the client of django-redis (plain, Sentinel) or of
    Django's built-in Redis cache (its write server), see
    :func:`~ratelimit_tiers.storage.backends.redis_client`; :meth:`client` is
    the one place to change for others.
    """

    def __init__(self, alias: str) -> None:
        super().__init__(alias)
        # A busy key sends the same bytes on every check: build them once.
        self._check_call = lru_cache(maxsize=CALL_CACHE_SIZE)(self._build_check_call)
        # Connections of our own, made with the client pool's settings, kept
        # between checks: lending one from the pool costs more than the script.
        self._kept: deque[Any] = deque()
        self._start_connections()

    def client(self) -> Any:
        return self._client

    def make_key(self, key: str) -> str:
        return self._make_key(key)

    # Resolved once per storage instance, which get_storage() replaces when
    # CACHES or our settings change: a check then costs no lookups but its own.
    @cached_property
    def _client(self) -> Any:
        return redis_client(self.alias)

    @cached_property
    def _make_key(self) -> Callable[[str], str]:
        return caches[self.alias].make_key

    def hit(self, prefix: str, category: str) -> Outcome:
        return self._check(prefix, category, charge=True)

    def peek(self, prefix: str, category: str) -> Outcome:
        return self._check(prefix, category, charge=False)

    def clear(self, prefix: str) -> None:
        with wrap_errors():
            self.client().delete(*[self.make_key(k) for k in self.bucket_keys(prefix)])

    def forget(self, prefixes: Iterable[str]) -> None:
        generation = base.new_generation()
        with wrap_errors():
            client = self.client()
            # One command per key: keys of different prefixes may live on different cluster nodes.
            # The generation first: a load that began before it can no longer install (hit.lua).
            pipe = client.pipeline(transaction=False)
            for prefix in prefixes:
                pipe.set(self.make_key(base.generation_key(prefix)), generation, ex=base.GENERATION_TIMEOUT)
                pipe.delete(self.make_key(policy_key(prefix)))
            pipe.execute()

    def give_back(self, prefix: str, category: str, decision: Decision) -> bool:
        keys = [
            self.make_key(policy_key(prefix)),
            self.make_key(bucket_key(prefix, category, EXACT)),
            self.make_key(bucket_key(prefix, category, COUNTER)),
        ]
        with wrap_errors():
            # Rare (another throttle refused): the client's own script call is fast enough.
            script = self.client().register_script(GIVE_BACK_SCRIPT)
            return bool(script(keys=keys, args=[base.stamp_ms(decision)]))

    def hit_rate(self, name: str, rate: Rate) -> Decision:
        # The bucket carries its own policy, installed by the same script call.
        keys, args, _command = self._build_check_call(name, READ, True, rate.window)
        fields = Policy(ACTIVE, window=rate.window, limits={READ: rate.limit}).to_fields()
        # No eviction ever sets an ad-hoc bucket's generation: it is always "".
        decision = self._outcome(self._run(ScriptCall.of(keys, (*args, "", *flatten(fields))))).decision
        assert decision is not None
        return decision

    def _check(self, prefix: str, category: str, *, charge: bool) -> Outcome:
        call = self._check_call(prefix, category, charge, conf.POLICY_TIMEOUT)
        reply = self._run(call)
        attempts = 0
        while reply.startswith(b"miss"):
            # "miss <generation>": the script installs what we load only if no
            # eviction has replaced that generation meanwhile; else it misses again.
            attempts += 1
            if attempts > base.INSTALL_ATTEMPTS:
                raise StorageUnavailable(
                    f"the policy of {prefix} changed during each of {base.INSTALL_ATTEMPTS} loads"
                )
            fields = load_policy(prefix).to_fields()
            reply = self._run(ScriptCall.of(call.keys, (*call.args, reply[5:].decode(), *flatten(fields))))
        return self._outcome(reply)

    def _build_check_call(self, prefix: str, category: str, charge: bool, timeout: int) -> ScriptCall:
        keys = [
            self.make_key(policy_key(prefix)),
            self.make_key(bucket_key(prefix, category, EXACT)),
            self.make_key(bucket_key(prefix, category, COUNTER)),
            self.make_key(base.generation_key(prefix)),
        ]
        return ScriptCall.of(keys, [category, "1" if charge else "0", timeout])

    def _run(self, call: ScriptCall) -> bytes:
        """EVALSHA the script: its encoded call, sent on a connection the storage keeps.

        This is the client's own ``evalsha`` minus its generic argument
        packing and per-command bookkeeping, which cost more than the script
        (see bench/README.md). Each storage opens up to
        :data:`KEPT_CONNECTIONS` connections of its own, made as the client's
        pool makes them (so Sentinel's find the master), and keeps them
        between checks; more concurrent checks borrow from the pool. Each
        connection's ``retry`` policy applies, a failed one is disconnected,
        and any failure becomes :class:`StorageUnavailable`.
        """
        try:
            try:
                return self._send(call.command)
            except NoScriptError:
                self.client().script_load(SCRIPT)
                return self._send(call.command)
        except Exception as exc:  # Inline, not wrap_errors(): this is the hot path.
            raise StorageUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def _send(self, command: bytes) -> bytes:
        if self._pid != os.getpid():  # Forked: the parent's connections are not ours.
            self._start_connections()
        try:
            connection = self._kept.pop()
        except IndexError:
            connection = self._open()
            if connection is None:  # All of ours are busy: borrow one from the pool.
                return self._send_borrowed(command)
            idle = False
        else:
            idle = True
        try:
            return self._exchange(connection, command)
        except RedisConnectionError:
            if not idle:
                raise
            # While it sat idle the server may have closed it (a restart, its
            # idle timeout), so the command never reached Redis: reconnect once.
            return self._exchange(connection, command)
        finally:
            self._kept.append(connection)

    def _start_connections(self) -> None:
        # Dropping a forked parent's connections closes only our copies of
        # their sockets: redis-py shuts a socket down only in its own process.
        self._kept.clear()
        self._opened, self._lock, self._pid = 0, threading.Lock(), os.getpid()

    def _open(self) -> Any:
        """A new connection of our own, made as the client's pool makes its own, unless we have enough."""
        with self._lock:
            if self._opened >= KEPT_CONNECTIONS:
                return None
            self._opened += 1
        client = self.client()
        warn_if_evicting(self.alias, client)  # Once per process: see storage/eviction.py.
        pool = client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    def _send_borrowed(self, command: bytes) -> bytes:
        pool = self.client().connection_pool
        connection = pool.get_connection()
        try:
            return self._exchange(connection, command)
        finally:
            pool.release(connection)

    def _exchange(self, connection: Any, command: bytes) -> bytes:
        try:
            return connection.retry.call_with_retry(  # type: ignore[no-any-return]
                lambda: self._round_trip(connection, command), lambda error: connection.disconnect()
            )
        except ResponseError:  # An error reply (NOSCRIPT...) was read whole: the connection is clean.
            raise
        except BaseException:
            connection.disconnect()  # Anything half sent or unread goes with the socket.
            raise

    @staticmethod
    def _round_trip(connection: Any, command: bytes) -> Any:
        # Connect through connect(), not send_packed_command()'s own fallback,
        # which a Sentinel connection does not override: that one would dial the
        # service name, not the master. Connected, this is a no-op.
        connection.connect()
        connection.send_packed_command([command])
        return connection.read_response(disable_decoding=True)

    @staticmethod
    def _outcome(reply: bytes) -> Outcome:
        if not reply[:1].isdigit():
            return Outcome(reply.decode())
        allowed, limit, window, remaining, reset, now = map(int, reply.split())
        return Outcome(
            ACTIVE,
            Decision(
                allowed=bool(allowed),
                limit=limit,
                window=window // 1000,
                remaining=remaining,
                reset_after=reset / 1000,
                now=now / 1000,
            ),
        )
