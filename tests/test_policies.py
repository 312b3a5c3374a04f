"""Cached policies never outlive the eviction of a change, even when a load races it
(in one process, and against real processes: a request racing an uncommitted revocation).
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from ratelimit_tiers import invalidation, policies
from ratelimit_tiers.algorithms import EXACT_MAX_LIMIT
from ratelimit_tiers.exceptions import StorageUnavailable
from ratelimit_tiers.models import APIKey
from ratelimit_tiers.rules import Rule
from ratelimit_tiers.storage import get_storage
from ratelimit_tiers.storage.base import INSTALL_ATTEMPTS
from tests.processes import ROOT, ProjectServer, request


def patch_load(monkeypatch, storage, during_load):
    """Run ``during_load`` between reading a key's row and installing the policy built from it."""
    module = importlib.import_module(type(storage).__module__)
    real, states = module.load_policy, []

    def load(prefix):
        policy = real(prefix)
        during_load(len(states))
        states.append(policy.state)
        return policy

    monkeypatch.setattr(module, "load_policy", load)
    return states


def revoke_once(attempt):
    if attempt == 0:
        key = APIKey.objects.get()
        key.revoked = True
        key.save()  # Evicts at once (and again on commit).


@pytest.mark.django_db
def test_a_load_that_raced_a_revocation_is_not_installed(backend, account, raw_key, monkeypatch):
    prefix = raw_key.split(".")[0]
    storage = get_storage()
    states = patch_load(monkeypatch, storage, revoke_once)
    # The first load read the row before the revocation; its eviction came before the
    # install, so the install is refused and the key's policy is loaded again.
    assert storage.hit(prefix, account.pk, "read").state == "revoked"
    assert states == ["active", "revoked"]
    monkeypatch.undo()
    for _ in range(3):  # And no later check sees the stale policy.
        assert storage.peek(prefix, account.pk, "read").state == "revoked"


@pytest.mark.django_db
def test_a_policy_that_changes_at_every_load_gives_up(backend, account, raw_key, monkeypatch):
    prefix = raw_key.split(".")[0]
    storage = get_storage()
    states = patch_load(monkeypatch, storage, lambda attempt: invalidation.evict([(prefix, account.pk)]))
    with pytest.raises(StorageUnavailable, match="changed during each of"):
        storage.hit(prefix, account.pk, "read")
    assert len(states) == INSTALL_ATTEMPTS
    monkeypatch.undo()
    assert storage.hit(prefix, account.pk, "read").decision.remaining == 59


SETTINGS = """
CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": %r}}
DEBUG = False
"""

# Revoke inside a transaction and hold it open until the test says "commit".
REVOKE_AND_WAIT = """
import sys
from django.db import transaction
from ratelimit_tiers.models import APIKey
from ratelimit_tiers.rules import Rule
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


@pytest.mark.redis
def test_a_request_racing_a_revocation_does_not_outlive_its_commit(project):
    # A gunicorn worker serves requests while another process revokes the key
    # inside a transaction, on a real Redis and the suite's real database.
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


def test_a_rule_above_the_exact_logs_size_is_counted_by_the_counter(settings):
    # The exact log keeps at most EXACT_MAX_LIMIT stamps: a larger rule runs the counter.
    settings.RATELIMIT_TIERS_ALGORITHM = "exact"
    assert policies.kind(Rule(EXACT_MAX_LIMIT, 60)) == "e"
    assert policies.kind(Rule(EXACT_MAX_LIMIT + 1, 60, algorithm="exact")) == "c"
    assert policies.kind(Rule(5, 60, algorithm="counter")) == "c"
    assert policies.kind(Rule(EXACT_MAX_LIMIT + 1, calendar="day")) == "q"
