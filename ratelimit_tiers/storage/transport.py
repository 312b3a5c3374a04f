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

from redis._parsers import BaseParser
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | int | float
#: Connections each transport opens and keeps; more at once borrow from the client's pool.
KEPT_CONNECTIONS = 8
#: Bytes asked of the socket per read: a check's whole reply, in one read.
READ_SIZE = 65536


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

    Commands must answer a bulk string (or an error), as a script call does:
    on a plain or TLS connection (RESP2, no health checks) that reply is read
    straight from the socket (:func:`read_bulk`), without redis-py's parser
    layers; other connections (Sentinel's, RESP3...) go through redis-py.
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
        exchange = self._exchange_direct if self._direct else self._exchange
        try:
            return exchange(connection, command)
        except RedisConnectionError:
            if not idle:
                raise
            # While it sat idle the server may have closed it (a restart, its
            # idle timeout), so the command never reached Redis: reconnect once.
            return exchange(connection, command)
        finally:
            self.kept.append(connection)

    @property
    def opened(self) -> int:
        """How many connections of its own this process opened."""
        return self._opened

    @property
    def direct(self) -> bool:
        """Whether its connections' replies are read straight from the socket (:func:`reads_directly`)."""
        return self._direct

    def _start(self) -> None:
        # Dropping a forked parent's connections closes only our copies of
        # their sockets: redis-py shuts a socket down only in its own process.
        self.kept.clear()
        self._opened, self._lock, self._pid = 0, threading.Lock(), os.getpid()
        self._direct = False  # Set when the first connection of our own is made.

    def _open(self) -> Any:
        """A new connection of our own, made as the client's pool makes its own, unless we have enough."""
        with self._lock:
            if self._opened >= self.size:
                return None
            self._opened += 1
        client = self.client()
        self.on_open(client)
        pool = client.connection_pool
        self._direct = reads_directly(pool.connection_class, pool.connection_kwargs)
        return pool.connection_class(**pool.connection_kwargs)

    def _send_borrowed(self, command: bytes) -> bytes:
        pool = self.client().connection_pool
        connection = pool.get_connection()
        try:
            return self._exchange(connection, command)
        finally:
            pool.release(connection)

    def _exchange(self, connection: Any, command: bytes) -> bytes:
        return self._with_retry(connection, lambda: self._round_trip(connection, command))

    def _exchange_direct(self, connection: Any, command: bytes) -> bytes:
        return self._with_retry(connection, lambda: self._round_trip_direct(connection, command))

    @staticmethod
    def _with_retry(connection: Any, round_trip: Callable[[], bytes]) -> bytes:
        try:
            return connection.retry.call_with_retry(  # type: ignore[no-any-return]
                round_trip, lambda error: connection.disconnect()
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

    @classmethod
    def _round_trip_direct(cls, connection: Any, command: bytes) -> bytes:
        sock = connection._sock
        if sock is None:  # Not connected (new, or disconnected by a failure): redis-py connects.
            return cls._round_trip(connection, command)  # type: ignore[no-any-return]
        try:
            sock.sendall(command)
            return read_bulk(sock)
        except TimeoutError as exc:  # socket.timeout: as redis-py reports it, so its retry policy applies.
            raise RedisTimeoutError(f"Timeout on the socket: {exc}") from exc
        except OSError as exc:
            raise RedisConnectionError(f"Error on the socket: {exc}") from exc


def reads_directly(connection_class: type[AbstractConnection], kwargs: dict[str, Any]) -> bool:
    """Whether :func:`read_bulk` may read this kind of connection's replies in place of redis-py.

    Only a connection that sends and reads as redis-py's own does (plain, TLS
    or Unix socket; not Sentinel's, which turns some errors into failovers),
    speaking RESP2 (RESP3 may interleave push messages) without health checks
    (a ``PING`` redis-py would send before a command).
    """
    return (
        connection_class.read_response is AbstractConnection.read_response
        and connection_class.send_packed_command is AbstractConnection.send_packed_command
        and str(kwargs.get("protocol") or 2) == "2"
        and not kwargs.get("health_check_interval")
    )


def read_bulk(sock: Any) -> bytes:
    """Read one reply, a bulk string, from a blocking socket: its bytes.

    An error reply raises the exception redis-py would (e.g. ``NoScriptError``,
    so that the script is loaded). The server closing the connection raises
    redis-py's ``ConnectionError``; a socket timeout raises ``TimeoutError``
    (socket.timeout), for the caller to report as redis-py does. Anything
    else (a nil, another type, more than one reply) is a protocol error.
    """
    reply, head = b"", -1
    while head < 0:  # Nearly always one read: a check's reply is a few dozen bytes.
        reply = _more(sock, reply)
        head = reply.find(b"\r\n")
    kind = reply[:1]
    if kind == b"$":
        length = int(reply[1:head])
        end = head + 2 + length
        while length >= 0 and len(reply) < end + 2:
            reply = _more(sock, reply)
        if length >= 0 and len(reply) == end + 2:
            return reply[head + 2 : end]
    elif kind == b"-" and len(reply) == head + 2:
        raise BaseParser.parse_error(reply[1:head].decode(errors="replace"))  # type: ignore[no-untyped-call]
    raise InvalidResponse(f"Unexpected reply to a script call: {reply[:64]!r}")


def _more(sock: Any, reply: bytes) -> bytes:
    data: bytes = sock.recv(READ_SIZE)
    if not data:
        raise RedisConnectionError("Connection closed by server.")
    return reply + data
