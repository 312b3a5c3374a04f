"""Fail-open admits without counting; it never brings a revoked, expired, disabled or deleted key back.

In-process here with an unreachable store (``broken_store``); on real processes
(gunicorn, a SIGKILLed redis-server) in ``test_dead_keys_under_gunicorn``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from ratelimit_tiers import key_state
from ratelimit_tiers.breaker import get_breaker
from ratelimit_tiers.key_state import TTL, KeyStates
from ratelimit_tiers.models import Account, APIKey
from ratelimit_tiers.names import ACTIVE, EXPIRED, INACTIVE, REVOKED, UNKNOWN
from tests.conftest import RedisServer
from tests.processes import FAIL_OPEN_SETTINGS, ProjectServer, request

THROTTLED = "/api/whoami/"
UNTHROTTLED = "/api/whoami/unthrottled/"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def client(raw_key):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return api


def kill(kind, key):
    """Make a live key dead in one of the four ways, as an operator would (signals and all)."""
    if kind == "revoked":
        key.revoked = True
        key.save()
    elif kind == "expired":
        key.expires_at = timezone.now() - timedelta(seconds=1)
        key.save()
    elif kind == "inactive":
        key.account.is_active = False
        key.account.save()
    else:
        key.delete()


@pytest.fixture(autouse=True)
def _fresh_states():
    key_state.states.clear()
    yield
    key_state.states.clear()


@pytest.mark.parametrize("url", [THROTTLED, UNTHROTTLED])
@pytest.mark.parametrize(
    ("kind", "code"),
    # A deleted key leaves this process's identity cache at once: "unknown_key", as for any unknown key.
    [("revoked", "revoked"), ("expired", "expired"), ("inactive", "inactive"), ("deleted", "unknown_key")],
)
def test_dead_key_stays_dead_while_the_store_is_down(request, account, raw_key, url, kind, code):
    other = Account.objects.create(name="other", tier=account.tier)
    live_key = APIKey.objects.create_key(account=other, name="other")[1]
    api, live = client(raw_key), client(live_key)
    assert api.get(url).status_code == 200  # Warm: identity cached in this process, policy in the store.
    assert live.get(url).status_code == 200
    kill(kind, APIKey.objects.get(prefix=raw_key.split(".")[0]))
    request.getfixturevalue("broken_store")

    for _ in range(5):  # Refused connections, then the open breaker: both fail open.
        response = api.get(url)
        assert response.status_code == 401
        assert response.json()["code"] == code
        response = live.get(url)
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response  # Admitted without counting.
    assert get_breaker().is_open


def test_fail_closed_is_unchanged(account, raw_key, broken_store, settings):
    settings.RATELIMIT_TIERS_FAIL_OPEN = False
    for url in (THROTTLED, UNTHROTTLED):
        response = client(raw_key).get(url)
        assert response.status_code == 503
        assert response.json()["code"] == "ratelimit_unavailable"


def test_one_query_per_key_per_ttl(account, raw_key, broken_store, django_assert_num_queries):
    api = client(raw_key)
    assert api.get(THROTTLED).status_code == 200  # Identity, last_used and the state: cold.
    with django_assert_num_queries(0):
        assert [api.get(THROTTLED).status_code for _ in range(5)] == [200] * 5


def test_states_are_read_from_the_row_and_kept_for_the_ttl(account, raw_key):
    clock = Clock()
    states = KeyStates(clock)
    prefix = raw_key.split(".")[0]
    assert states.state(prefix) == ACTIVE
    APIKey.objects.filter(prefix=prefix).update(revoked=True)  # No signal: another process did it.
    clock.now += TTL - 0.01
    assert states.state(prefix) == ACTIVE  # Kept...
    clock.now += 0.01
    assert states.state(prefix) == REVOKED  # ...for TTL seconds, no longer.
    assert states.state("nosuchprefix") == UNKNOWN


def test_expiry_is_compared_on_every_call(account):
    clock = Clock()
    states = KeyStates(clock)
    expires = timezone.now() + timedelta(seconds=1)
    clock.now = expires.timestamp() - 1
    key = APIKey.objects.create_key(account=account, name="soon", expires_at=expires)[0]
    assert states.state(key.prefix) == ACTIVE
    clock.now += 1  # Within the TTL, but past the expiry.
    assert states.state(key.prefix) == EXPIRED


def test_revoked_beats_inactive(account, raw_key):
    prefix = raw_key.split(".")[0]
    Account.objects.filter(pk=account.pk).update(is_active=False)
    assert KeyStates().state(prefix) == INACTIVE
    APIKey.objects.filter(prefix=prefix).update(revoked=True)
    assert KeyStates().state(prefix) == REVOKED


def test_saving_a_key_or_an_account_drops_this_process_states(account, raw_key):
    prefix = raw_key.split(".")[0]
    assert key_state.state(prefix) == ACTIVE
    account.is_active = False
    account.save()
    assert key_state.state(prefix) == INACTIVE
    key = APIKey.objects.get()
    key.revoked = True
    key.save()
    assert key_state.state(prefix) == REVOKED


SERVER_SETTINGS = (
    FAIL_OPEN_SETTINGS
    + """
# A breaker that stays closed through the first phase and then open through the last.
RATELIMIT_TIERS_BREAKER_FAILURES = 100
RATELIMIT_TIERS_BREAKER_COOLDOWN = 120
"""
)

KILL_KEYS = """
from datetime import timedelta
from django.utils import timezone
from ratelimit_tiers.models import APIKey
def key(name):
    return APIKey.objects.select_related("account").get(account__name=name)
k = key("revoked"); k.revoked = True; k.save()
k = key("expired"); k.expires_at = timezone.now() - timedelta(seconds=1); k.save()
a = key("inactive").account; a.is_active = False; a.save()
key("deleted").delete()
"""

DEAD = ("revoked", "expired", "inactive", "deleted")
# One worker: which worker serves a request is the kernel's choice, so with two, one of
# them might not see enough failures to open its breaker within a bounded run.
WORKERS = 1
OPENED = "failed 100 times in a row"


def sweep(port, keys, count):
    """``count`` GETs per key on each view, interleaved: {(name, url): [status, ...]}."""
    statuses = {(name, url): [] for name in keys for url in (THROTTLED, UNTHROTTLED)}
    for _ in range(count):
        for (name, url), seen in statuses.items():
            seen.append(request(port, url, keys[name], timeout=10).status)
    return statuses


def admitted_dead(statuses):
    return sum(status == 200 for (name, _url), seen in statuses.items() if name in DEAD for status in seen)


def dead_requests(statuses):
    return sum(len(seen) for (name, _url), seen in statuses.items() if name in DEAD)


def assert_dead_refused(statuses):
    for (name, url), seen in statuses.items():
        expected = 200 if name == "live" else 401
        assert seen == [expected] * len(seen), (name, url, seen)


@pytest.mark.redis
def test_dead_keys_under_gunicorn(tmp_path):
    """Warm dead keys in every worker, SIGKILL redis-server: none is admitted, breaker closed or open."""
    redis = RedisServer(tmp_path)
    project = ProjectServer(tmp_path, SERVER_SETTINGS % redis.url, workers=WORKERS)
    try:
        keys = project.create_keys(*[(name, "Free", 1_000_000) for name in ("live", *DEAD)])
        project.start()
        warm = sweep(project.port, keys, 10)  # Identities cached in the workers, policies in Redis.
        assert {status for seen in warm.values() for status in seen} == {200}
        project.manage("shell", "-c", KILL_KEYS)
        assert_dead_refused(sweep(project.port, keys, 2))  # The store says so.

        redis.kill()
        # Refused connections with the breaker still closed: at most 2 failures per
        # request (the check, then the bad-key bucket), 72 in all, under the 100 that open it.
        refused = sweep(project.port, keys, 4)
        assert OPENED not in project.log_text()
        # Then until every worker's breaker has opened (bounded), and 20 more each with it open.
        opening = []
        for _ in range(20):
            if project.log_text().count(OPENED) == WORKERS:
                break
            opening.append(sweep(project.port, keys, 2))
        assert project.log_text().count(OPENED) == WORKERS
        skipped = sweep(project.port, keys, 20)
        log = project.log_text()
    finally:
        project.stop()
        redis.kill()
    print(
        f"\ndead keys admitted with the store down: {admitted_dead(refused)} of {dead_requests(refused)} "
        f"(breaker closed), {admitted_dead(skipped)} of {dead_requests(skipped)} (breaker open)"
    )
    for statuses in (refused, *opening, skipped):
        assert_dead_refused(statuses)
    assert log.count(OPENED) == WORKERS and "is back" not in log
    assert "Traceback" not in log
