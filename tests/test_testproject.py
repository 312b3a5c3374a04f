"""End to end: the testproject under a real multi-process WSGI server (gunicorn) on a real Redis.

The server gets its own database (a temporary SQLite file, or a new database on
the suite's PostgreSQL cluster), migrated and given a key by ``manage.py`` in
subprocesses, independent of pytest-django's test database.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from redis import Redis

from tests import postgres
from tests.conftest import free_port

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4

# The testproject's settings, made strict for a test: fail closed (an outage
# must show up as 503s, never as extra admissions) and tolerate a loaded machine.
SETTINGS = """
from testproject.settings import *  # noqa: F403

CACHES["default"]["OPTIONS"] = {"SOCKET_CONNECT_TIMEOUT": 5, "SOCKET_TIMEOUT": 5}
RATELIMIT_TIERS_FAIL_OPEN = False
DEBUG = False
"""


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("testproject")
    (directory / "e2e_settings.py").write_text(SETTINGS)
    redis_url = f"redis://127.0.0.1:{redis_server.port}/3"
    Redis.from_url(redis_url).flushdb()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "e2e_settings",
        **postgres.database_env(directory),
        "REDIS_URL": redis_url,
        "PYTHONPATH": os.pathsep.join([str(directory), str(ROOT)]),
    }

    def manage(*args):
        command = [sys.executable, "manage.py", *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout

    manage("migrate", "-v0")
    key = manage("create_api_key", "e2e", "--tier", "Free", "--name", "e2e").strip().splitlines()[-1]

    port = free_port()
    log = (directory / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(WORKERS),
            "--bind",
            f"127.0.0.1:{port}",
            "testproject.wsgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_serving(port, process)
        yield port, key
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_until_serving(port, process):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "gunicorn exited"
        try:
            status, _headers = get(port, "/admin/login/")
        except OSError:
            time.sleep(0.1)
            continue
        if status == 200:
            return
    raise RuntimeError("gunicorn did not start serving")


def get(port, path, key=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Api-Key {key}"} if key else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        connection.close()


def test_free_key_gets_exactly_60_of_150_concurrent_requests_across_workers(server):
    port, key = server
    with ThreadPoolExecutor(32) as executor:
        responses = list(executor.map(lambda _: get(port, "/api/items/", key), range(150)))
    statuses = [status for status, _headers in responses]
    assert statuses.count(200) == 60
    assert statuses.count(429) == 90
    assert all(headers["X-RateLimit-Limit"] == "60" for _status, headers in responses)
    # Each admission's Remaining came from the same atomic step: 59, 58, ... 0, once each.
    remaining = sorted(int(h["X-RateLimit-Remaining"]) for status, h in responses if status == 200)
    assert remaining == list(range(60))
    assert all(1 <= int(h["Retry-After"]) <= 60 for status, h in responses if status == 429)
