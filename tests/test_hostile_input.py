from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from ratelimit_tiers.models import APIKey
from tests.conftest import URL

UNKNOWN = "Api-Key AAAAAAAAAAAA." + "a" * 43


def from_ip(address, header=None):
    client = APIClient(REMOTE_ADDR=address)
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    return client


@pytest.fixture
def bad_headers(account):
    revoked, revoked_raw = APIKey.objects.create_key(account=account, name="revoked")
    revoked.revoked = True
    revoked.save()
    expired_raw = APIKey.objects.create_key(
        account=account, name="expired", expires_at=timezone.now() - timedelta(seconds=1)
    )[1]
    return {
        "unknown": UNKNOWN,
        "malformed": "Api-Key nope",
        "too long": "Api-Key " + "x" * 5000,
        "revoked": f"Api-Key {revoked_raw}",
        "expired": f"Api-Key {expired_raw}",
    }


def assert_limited(backend, statuses, limit):
    """Exactly ``limit`` 401s then 429s on Redis (exact); the LocMem counter is exact within one
    fixed window and may admit one more if the requests straddle a window boundary."""
    admitted = statuses.count(401)
    assert statuses == [401] * admitted + [429] * (len(statuses) - admitted)
    assert admitted == limit if backend == "redis" else limit <= admitted <= limit + 1


def test_bad_keys_are_limited_per_client_ip(backend, bad_headers, settings):
    settings.RATELIMIT_TIERS_INVALID_KEY_RATE = "10/min"
    kinds = list(bad_headers.values())
    statuses = [from_ip("198.51.100.1", kinds[i % len(kinds)]).get(URL).status_code for i in range(25)]
    # Every kind of bad key draws from the one bucket of the client's address.
    assert_limited(backend, statuses, 10)
    response = from_ip("198.51.100.1", UNKNOWN).get(URL)
    assert response.status_code == 429
    # The counter (LocMem) may ask for up to window + window/limit.
    assert 1 <= int(response["Retry-After"]) <= (60 if backend == "redis" else 66)
    assert response.json()["code"] == "rate_limited"
    # Another address has its own bucket.
    assert from_ip("198.51.100.2", UNKNOWN).get(URL).status_code == 401


def test_default_is_60_per_minute(backend, db):
    client = from_ip("198.51.100.3", UNKNOWN)
    statuses = [client.get(URL).status_code for _ in range(70)]
    assert_limited(backend, statuses, 60)


def test_bad_keys_never_touch_a_real_keys_counter_or_lock_its_owner_out(backend, raw_key, bad_headers):
    prefix = raw_key.split(".")[0]
    # The attacker knows the prefix (it is in logs) but not the secret.
    wrong_secret = f"Api-Key {prefix}." + "b" * 43
    attacker = from_ip("198.51.100.4", wrong_secret)
    assert {attacker.get(URL).status_code for _ in range(100)} == {401, 429}
    # The owner, even behind the same address, is unaffected.
    owner = from_ip("198.51.100.4", f"Api-Key {raw_key}")
    response = owner.get(URL)
    assert response.status_code == 200
    assert response["X-RateLimit-Remaining"] == "59"


def test_no_limit_when_disabled(db, settings):
    settings.RATELIMIT_TIERS_INVALID_KEY_RATE = None
    client = from_ip("198.51.100.5", UNKNOWN)
    assert {client.get(URL).status_code for _ in range(80)} == {401}


def test_store_down_bad_keys_still_get_401(db, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # Nothing listens on port 1.
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.1, "SOCKET_TIMEOUT": 0.1},
        }
    }
    client = from_ip("198.51.100.6", UNKNOWN)
    assert {client.get(URL).status_code for _ in range(70)} == {401}


def test_malformed_keys_never_query_the_database(db, django_assert_num_queries):
    client = from_ip("198.51.100.7", "Api-Key not.a.key")
    with django_assert_num_queries(0):
        statuses = [client.get(URL).status_code for _ in range(70)]
    assert_limited("locmem", statuses, 60)


header_values = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.text(max_size=100).map(lambda t: "Api-Key " + t),
    st.from_regex(r"\AApi-Key [A-Za-z0-9]{0,14}\.[A-Za-z0-9_\-]{0,45}\Z"),
    st.integers(0, 100_000).map(lambda n: "Api-Key " + "k" * n),
)


@hsettings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=header_values, method=st.sampled_from(["get", "post", "delete"]))
def test_any_header_value_is_a_4xx_never_a_5xx(db, value, method):
    client = APIClient(REMOTE_ADDR="198.51.100.8")
    response = getattr(client, method)(URL, HTTP_AUTHORIZATION=value)
    assert 400 <= response.status_code < 500, (value, response.status_code)


@hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=header_values, address=st.one_of(st.ip_addresses().map(str), st.text(max_size=40)))
def test_any_client_address_and_forwarded_for_is_a_4xx(db, settings, value, address):
    settings.RATELIMIT_TIERS_TRUSTED_PROXIES = 1
    client = APIClient(REMOTE_ADDR=address, HTTP_X_FORWARDED_FOR=value)
    response = client.get(URL, HTTP_AUTHORIZATION=UNKNOWN)
    assert response.status_code in (401, 429)
