"""Cached policies never outlive the eviction of a change, even when a load races it."""

from __future__ import annotations

import importlib

import pytest

from ratelimit_tiers import policies
from ratelimit_tiers.exceptions import StorageUnavailable
from ratelimit_tiers.models import APIKey
from ratelimit_tiers.storage import get_storage
from ratelimit_tiers.storage.base import INSTALL_ATTEMPTS, Verdict


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
def test_a_load_that_raced_a_revocation_is_not_installed(backend, raw_key, monkeypatch):
    prefix = raw_key.split(".")[0]
    storage = get_storage()
    states = patch_load(monkeypatch, storage, revoke_once)
    # The first load read the row before the revocation; its eviction came before the
    # install, so the install is refused and the key's policy is loaded again.
    assert storage.hit(prefix, "read").state == "revoked"
    assert states == ["active", "revoked"]
    monkeypatch.undo()
    for _ in range(3):  # And no later check sees the stale policy.
        assert storage.peek(prefix, "read").state == "revoked"


@pytest.mark.django_db
def test_a_policy_that_changes_at_every_load_gives_up(backend, raw_key, monkeypatch):
    prefix = raw_key.split(".")[0]
    storage = get_storage()
    states = patch_load(monkeypatch, storage, lambda attempt: policies.evict([prefix]))
    with pytest.raises(StorageUnavailable, match="changed during each of"):
        storage.hit(prefix, "read")
    assert len(states) == INSTALL_ATTEMPTS
    monkeypatch.undo()
    assert storage.hit(prefix, "read").decision.remaining == 59


def test_a_verdict_is_the_answer_on_an_active_key():
    assert Verdict.state == policies.ACTIVE
