from __future__ import annotations

import socket
import subprocess

import pytest
from django.core.cache import caches
from django_redis import get_redis_connection
from redis import Redis
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError
from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from ratelimit_tiers.models import APIKey
from ratelimit_tiers.storage import get_storage
from ratelimit_tiers.storage.transport import read_bulk, reads_directly
from tests.conftest import RedisServer, free_port


class Trickle:
    """A real socket that hands out its bytes one at a time: every reply arrives in pieces."""

    def __init__(self, sock):
        self.sock = sock

    def recv(self, size):
        return self.sock.recv(1)


@pytest.fixture
def pair():
    ours, server = socket.socketpair()
    ours.settimeout(5)
    yield ours, server
    ours.close()
    server.close()


def test_a_reply_in_pieces_is_read_whole_by_its_length(pair):
    ours, server = pair
    server.sendall(b"$12\r\n1 60 \r\n 59 x\r\n")  # A bulk string may hold CRLF: its length decides.
    assert read_bulk(Trickle(ours)) == b"1 60 \r\n 59 x"


def test_an_error_reply_raises_what_redis_py_raises(pair):
    ours, server = pair
    server.sendall(b"-NOSCRIPT No matching script. Please use EVAL.\r\n")
    with pytest.raises(NoScriptError):  # So that the storage loads the script and sends again.
        read_bulk(Trickle(ours))


@pytest.mark.parametrize(
    "reply", [b"$-1\r\n", b":1\r\n", b"+OK\r\n", b"$1\r\nx\r\n$1\r\ny\r\n", b"-ERR x\r\n+OK\r\n"]
)
def test_anything_but_one_bulk_string_is_a_protocol_error(pair, reply):
    ours, server = pair
    server.sendall(reply)
    with pytest.raises(InvalidResponse):
        read_bulk(ours)


def test_a_server_closing_mid_reply_is_a_connection_error(pair):
    ours, server = pair
    server.sendall(b"$10\r\n12345")
    server.close()
    with pytest.raises(RedisConnectionError):  # What the storage resends on, if the connection sat idle.
        read_bulk(ours)


def test_silence_is_a_socket_timeout(pair):
    ours, _server = pair
    ours.settimeout(0.05)
    with pytest.raises(TimeoutError):
        read_bulk(ours)


@pytest.mark.parametrize(
    ("connection_class", "kwargs", "direct"),
    [
        (Connection, {}, True),
        (Connection, {"protocol": 2}, True),
        (SSLConnection, {}, True),
        (UnixDomainSocketConnection, {}, True),
        # Sentinel's turns a READONLY error into a failover: redis-py must read it.
        (SentinelManagedConnection, {}, False),
        (SentinelManagedSSLConnection, {}, False),
        (Connection, {"protocol": 3}, False),  # Push messages may come between replies.
        (Connection, {"health_check_interval": 30}, False),  # redis-py sends its PINGs.
    ],
)
def test_which_connections_are_read_directly(connection_class, kwargs, direct):
    assert reads_directly(connection_class, kwargs) is direct


@pytest.fixture
def tls_redis(tmp_path, settings):
    """A real Redis serving TLS, with a certificate for 127.0.0.1, as the default cache."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = RedisServer(
        tmp_path,
        *("--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)),
        *("--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"),
    )
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"rediss://127.0.0.1:{port}/0",
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
                "CONNECTION_POOL_KWARGS": {"ssl_ca_certs": str(cert), "ssl_check_hostname": True},
            },
        }
    }
    yield server
    caches["default"].close()
    server.kill()


def test_checks_over_tls_are_read_directly_and_survive_a_restart_and_a_flush(tls_redis, free_tier, raw_key):
    key = APIKey.objects.get()
    prefix = (key.prefix, key.account_id)
    storage = get_storage()
    assert storage.hit(*prefix, "read").decision.remaining == 59
    assert storage.transport.direct
    assert isinstance(storage.transport.kept[0], SSLConnection)
    assert storage.hit(*prefix, "read").decision.remaining == 58
    # Every connection dies: the kept one is reconnected (a TLS handshake) and the check sent once.
    Redis.from_url(tls_redis.url).client_kill_filter(_type="normal", skipme=True)
    assert storage.hit(*prefix, "read").decision.remaining == 57
    get_redis_connection("default").script_flush()  # NOSCRIPT, read over TLS: loaded and sent again.
    assert storage.hit(*prefix, "read").decision.remaining == 56


def test_a_plain_redis_cache_is_read_directly(redis_cache, free_tier, raw_key):
    storage = get_storage()
    key = APIKey.objects.get()
    assert storage.hit(key.prefix, key.account_id, "read").decision.remaining == 59
    assert storage.transport.direct
