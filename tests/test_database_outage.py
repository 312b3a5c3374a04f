"""The database goes away under a real gunicorn: no 500, ever.

Requests that need the database (a key not yet in the worker's identity
cache, an unknown key) get a JSON 503 with ``Retry-After``; keys the worker
already knows go on (their policies are in Redis), and the ``last_used``
write that falls due meanwhile fails quietly; a known key whose policy Redis
lost needs the database again, and gets the 503. The outage is real: the
testproject's database refuses every connection (``tests.postgres.outage``: a
PostgreSQL database closed to connections, or a SQLite file replaced by a directory).
"""

from __future__ import annotations

import http.client
import json
import time

import pytest
from django.core.cache import caches
from django.db import OperationalError
from django.db.models import QuerySet
from redis import Redis
from rest_framework.test import APIClient

from ratelimit_tiers import key_state, last_used
from ratelimit_tiers.models import APIKey
from tests import postgres
from tests.conftest import RedisServer
from tests.processes import ProjectServer

SETTINGS = """
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": %r,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
    }
}
DEBUG = False
"""

# Run in the worker once the app is loaded: a key's last_used write falls due
# every second instead of every minute, so the outage meets some.
GUNICORN_CONFIG = """
def post_worker_init(worker):
    from ratelimit_tiers import key_state, last_used

    last_used.INTERVAL = 1
"""

URLS = ("/api/whoami/", "/api/whoami/unthrottled/")
UNKNOWN_KEY = "ZZZZZZZZZZZZ." + "A" * 43
WARNING = "Could not record API key use"


def fetch(port, path, key):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"Authorization": f"Api-Key {key}"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.mark.redis
def test_database_outage_under_gunicorn(tmp_path):
    redis = RedisServer(tmp_path)
    project = ProjectServer(tmp_path, SETTINGS % redis.url, workers=1)  # One worker: "warm" is certain.
    try:
        keys = project.create_keys(("warm", "Free", 1_000_000), ("cold", "Free", 1_000_000))
        (tmp_path / "gunicorn_config.py").write_text(GUNICORN_CONFIG)
        project.start("-c", str(tmp_path / "gunicorn_config.py"))
        for url in URLS:
            assert fetch(project.port, url, keys["warm"])[0] == 200

        with postgres.outage(project.env):
            seen = {"warm": [], "cold": [], "unknown": [], "warm, policy lost": []}
            refusals = []
            for _ in range(3):
                time.sleep(1.1)  # The warm key's last_used write is due again.
                for name, key in (("warm", keys["warm"]), ("cold", keys["cold"]), ("unknown", UNKNOWN_KEY)):
                    for url in URLS:
                        status, headers, body = fetch(project.port, url, key)
                        seen[name].append(status)
                        if status == 503:
                            refusals.append((headers, body))

            # Redis loses the warm key's policy (a restart, an eviction): it must be loaded again.
            Redis.from_url(redis.url).flushdb()
            for url in URLS:
                status, headers, body = fetch(project.port, url, keys["warm"])
                seen["warm, policy lost"].append(status)
                if status == 503:
                    refusals.append((headers, body))

        after = [fetch(project.port, url, keys["cold"])[0] for url in URLS]
        log = project.log_text()
    finally:
        project.stop()
        redis.kill()
    print(f"\nstatuses with the database gone: {seen}; cold key once it is back: {after}")
    assert seen["warm"] == [200] * 6
    assert seen["cold"] == seen["unknown"] == [503] * 6
    assert seen["warm, policy lost"] == [503, 503]
    for headers, body in refusals:
        assert headers["Content-Type"] == "application/json"
        assert int(headers["Retry-After"]) >= 1
        assert json.loads(body)["code"] == "database_unavailable"
    assert after == [200, 200]
    assert log.count(WARNING) == 1  # The failed writes happened; one warning per minute, not per write.
    assert "Traceback" not in log


# In process, the database error is injected (the test database cannot be taken away).


def broken_database(*args, **kwargs):
    raise OperationalError("unable to open database file")


def test_last_used_write_never_fails_a_request(account, raw_key, monkeypatch, caplog):
    caplog.set_level("WARNING", logger="ratelimit_tiers")
    monkeypatch.setattr(QuerySet, "update", broken_database)
    key = APIKey.objects.get()
    last_used.forget()
    for _ in range(3):
        caches["default"].delete(f"rlt:{{{key.prefix}}}:used")  # Due again, in every process...
        last_used._seen.clear()  # ...and in this one.
        last_used.record(key.pk, key.prefix)  # Does not raise.
    assert caplog.text.count(WARNING) == 1  # One warning a minute at most, not one per write.


def test_fail_open_needs_the_database_for_the_key_state(account, raw_key, broken_store, monkeypatch):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    assert api.get("/api/whoami/").status_code == 200  # Identity cached.
    key_state.states.clear()
    monkeypatch.setattr(QuerySet, "first", broken_database)
    for url in ("/api/whoami/", "/api/whoami/unthrottled/"):
        response = api.get(url)
        assert response.status_code == 503
        assert response["Retry-After"] == "1"
        assert response.json()["code"] == "database_unavailable"
