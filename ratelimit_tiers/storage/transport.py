"""The Redis transport: commands in the Redis protocol (RESP), sent on connections kept between checks.

Nothing here knows what the limiter asks of Redis (that is ``storage/redis.py``):
only how a command's bytes are built once and sent with as little client-side
work as a round trip allows.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

Arg = str | int | float
#: Connections each transport opens and keeps; more at once borrow from the client's pool.
KEPT_CONNECTIONS = 8


def encode_command(*parts: bytes | Arg) -> bytes:
    """One command in the Redis protocol (RESP): an array of bulk strings."""
    encoded = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        encoded.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(encoded)


class ScriptCall(NamedTuple):
    """A script's keys and arguments, and the EVALSHA that sends them, encoded once."""

    keys: tuple[str, ...]
    args: tuple[Arg, ...]
    command: bytes

    @classmethod
    def of(cls, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> ScriptCall:
        return cls(tuple(keys), tuple(args), encode_command("EVALSHA", sha, len(keys), *keys, *args))


class KeptConnections:
    """Connections of our own, made as a redis-py client's pool makes its own, kept between commands.

    Sending an encoded command on one is the client's own ``execute_command``
    minus its generic argument packing and per-command bookkeeping, and minus
    the pool's lend-and-return, which together cost more than a small script
    (see bench/README.md). Up to ``size`` connections are opened, made with
    the pool's class and settings (so Sentinel's find the master); more
    concurrent commands borrow from the pool. Each connection's ``retry``
    policy applies, and a failed one is disconnected. A forked child opens its
    own. ``on_open`` is called with the client before each connection is made.
    """

    def __init__(
        self, client: Callable[[], Any], on_open: Callable[[Any], None], size: int = KEPT_CONNECTIONS
    ) -> None:
        self.client, self.on_open, self.size = client, on_open, size
        self.kept: deque[Any] = deque()
        self._start()

    def send(self, command: bytes) -> bytes:
        """Send one encoded command and read its reply, undecoded. Raises what redis-py raises."""
        if self._pid != os.getpid():  # Forked: the parent's connections are not ours.
            self._start()
        try:
            connection = self.kept.pop()
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
            self.kept.append(connection)

    @property
    def opened(self) -> int:
        """How many connections of its own this process opened."""
        return self._opened

    def _start(self) -> None:
        # Dropping a forked parent's connections closes only our copies of
        # their sockets: redis-py shuts a socket down only in its own process.
        self.kept.clear()
        self._opened, self._lock, self._pid = 0, threading.Lock(), os.getpid()

    def _open(self) -> Any:
        """A new connection of our own, made as the client's pool makes its own, unless we have enough."""
        with self._lock:
            if self._opened >= self.size:
                return None
            self._opened += 1
        client = self.client()
        self.on_open(client)
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
