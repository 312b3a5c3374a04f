from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from ratelimit_tiers.clients import client_ip, client_network, parse_ip
from tests.conftest import URL


def meta(rf, remote="203.0.113.7", forwarded=None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return rf.get("/", **extra)


def test_remote_addr_by_default_and_forwarded_for_ignored(rf):
    assert client_ip(meta(rf)) == "203.0.113.7"
    assert client_ip(meta(rf, forwarded="198.51.100.1")) == "203.0.113.7"


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (1, "198.51.100.1", "198.51.100.1"),
        (1, "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # The forged entry is left of the proxy's.
        (2, "6.6.6.6, 198.51.100.1, 10.0.0.2", "198.51.100.1"),
        (2, "198.51.100.1", "203.0.113.7"),  # Fewer hops than proxies: not through them.
        (1, "", "203.0.113.7"),
        (1, " , ", "203.0.113.7"),
        (1, "not-an-ip", "unknown"),
        (1, "198.51.100.1:4711", "198.51.100.1"),
        (1, "[2001:db8::1]:443", "2001:db8::1"),
    ],
)
def test_forwarded_for_with_trusted_proxies(rf, settings, proxies, forwarded, expected):
    settings.RATELIMIT_TIERS_TRUSTED_PROXIES = proxies
    assert client_ip(meta(rf, forwarded=forwarded)) == expected


def test_ipv6_is_grouped_by_64(rf):
    a = client_network(meta(rf, remote="2001:db8:1:2:aaaa::1"))
    b = client_network(meta(rf, remote="2001:db8:1:2:ffff:ffff:ffff:ffff"))
    c = client_network(meta(rf, remote="2001:db8:1:3::1"))
    assert a == b == "2001:db8:1:2::/64"
    assert c != a
    assert client_network(meta(rf, remote="::ffff:192.0.2.9")) == "192.0.2.9"
    assert client_network(meta(rf, remote="192.0.2.9")) == "192.0.2.9"
    assert client_network(meta(rf, remote="")) == "unknown"


@pytest.mark.parametrize("value", ["", "x", "1.2.3", "999.1.1.1", "[::1", "::g", "1.2.3.4:x:y"])
def test_garbage_is_not_an_address(value):
    assert parse_ip(value) is None


@pytest.mark.redis
@pytest.mark.parametrize("proxies", [0, 1])
def test_forged_forwarded_for_shares_one_bucket(redis_cache, db, settings, proxies):
    """1,000 requests with 1,000 different forged X-Forwarded-For values, from one address.

    On Redis, where the bucket is an exact sliding log: exactly 60 get through in any minute.
    """
    settings.RATELIMIT_TIERS_TRUSTED_PROXIES = proxies
    client = APIClient(REMOTE_ADDR="203.0.113.7")
    statuses = []
    for i in range(1000):
        forged = f"10.{i // 256}.{i % 256}.1"
        # Behind one proxy, the proxy appends the address it saw.
        forwarded = f"{forged}, 198.51.100.1" if proxies else forged
        response = client.get(
            URL, HTTP_AUTHORIZATION="Api-Key AAAAAAAAAAAA." + "a" * 43, HTTP_X_FORWARDED_FOR=forwarded
        )
        statuses.append(response.status_code)
    assert statuses.count(401) == 60
    assert statuses.count(429) == 940
    assert statuses[:60] == [401] * 60
