"""Policy eviction against real processes: a gunicorn worker serves requests while
another process revokes the key inside a transaction, on a real Redis.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.processes import ROOT, ProjectServer, request

pytestmark = pytest.mark.redis

SETTINGS = """
CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": %r}}
DEBUG = False
"""

# Revoke inside a transaction and hold it open until the test says "commit".
REVOKE_AND_WAIT = """
import sys
from django.db import transaction
from ratelimit_tiers.models import APIKey
with transaction.atomic():
    key = APIKey.objects.get(prefix=%r)
    key.revoked = True
    key.save()  # Evicts the key's cached policy now, and again on commit.
    print("revoked", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def project(redis_server, tmp_path):
    project = ProjectServer(tmp_path, SETTINGS % f"redis://127.0.0.1:{redis_server.port}/5", workers=1)
    yield project
    project.stop()


def test_a_request_racing_a_revocation_does_not_outlive_its_commit(project):
    raw_key = project.create_keys(("racer", "Free", None))["racer"]
    project.start()
    assert request(project.port, "/api/items/", raw_key).status == 200  # Caches the policy.
    revoker = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-v0", "-c", REVOKE_AND_WAIT % raw_key.split(".")[0]],
        cwd=ROOT,
        env=project.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert revoker.stdout is not None and revoker.stdin is not None
        assert revoker.stdout.readline() == "revoked\n"
        # The revocation is not committed: the worker reads the key as active, and caches that.
        assert request(project.port, "/api/items/", raw_key).status == 200
        revoker.stdin.write("commit\n")
        revoker.stdin.close()
        assert revoker.wait(timeout=60) == 0
    finally:
        revoker.kill()
    assert request(project.port, "/api/items/", raw_key).status == 401
