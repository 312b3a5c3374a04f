"""The usage ledger counts each check as its client saw it, on each storage: admitted, or refused by rule."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from django_redis import get_redis_connection
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from ratelimit_tiers import tally_flush, usage
from ratelimit_tiers.authentication import APIKeyAuthentication
from ratelimit_tiers.ledger import HOUR, Refusals
from ratelimit_tiers.local_refusals import notes
from ratelimit_tiers.middleware import RateLimitHeadersMiddleware
from ratelimit_tiers.models import APIKey
from ratelimit_tiers.names import OTHER_THROTTLE, account_tag, ledger_key
from ratelimit_tiers.refusal_tally import TallyKey, tally
from ratelimit_tiers.storage import get_storage
from ratelimit_tiers.throttling import TierRateThrottle
from tests.conftest import URL, key_client, only_rule

pytestmark = pytest.mark.django_db


def totals(account):
    """The ledger's counts of ``account`` around now, per (prefix, category): (admitted, refused, by rule)."""
    now = datetime.now(timezone.utc)
    found: dict[tuple[str, str], tuple[int, int, dict[str, int]]] = {}
    for row in usage.hourly(now - timedelta(hours=2), now + timedelta(hours=2), [account.pk]):
        admitted, refused, by = found.get((row.prefix, row.category), (0, 0, {}))
        for rule, n in row.refused_by.items():
            by = {**by, rule: by.get(rule, 0) + n}
        found[(row.prefix, row.category)] = (admitted + row.admitted, refused + row.refused, by)
    return found


def test_each_check_counts_once_per_outcome_and_peeks_count_nothing(backend, account, free_tier):
    only_rule(free_tier, 3)
    key = APIKey.objects.create_key(account=account, name="k")[0]
    storage = get_storage()
    for _ in range(5):
        storage.hit(key.prefix, account.pk, "read")
    storage.peek(key.prefix, account.pk, "read")
    storage.hit(key.prefix, account.pk, "write")
    assert totals(account) == {
        (key.prefix, "read"): (3, 2, {"all-60s": 2}),
        (key.prefix, "write"): (1, 0, {}),
    }
    (read,) = [row for row in usage.hourly(*around_now(), [account.pk]) if row.category == "read"]
    assert read.last_refused is not None
    assert abs(read.last_refused.timestamp() - datetime.now(timezone.utc).timestamp()) < 60


def around_now():
    now = datetime.now(timezone.utc)
    return now - timedelta(hours=2), now + timedelta(hours=2)


def test_refusals_served_from_memory_are_counted_once_flushed(backend, account, free_tier, api):
    only_rule(free_tier, 3)
    statuses = [api.get(URL).status_code for _ in range(10)]
    assert statuses == [200] * 3 + [429] * 7
    prefix = APIKey.objects.get().prefix
    assert totals(account) == {(prefix, "read"): (3, 1, {"all-60s": 1})}  # The store saw one refusal.
    assert tally_flush.flush() == 1
    assert not tally
    assert totals(account) == {(prefix, "read"): (3, 7, {"all-60s": 7})}


def test_the_next_store_call_of_the_key_carries_the_refusals_served_from_memory(
    backend, account, free_tier, api, monkeypatch
):
    clock = [1000.0]
    monkeypatch.setattr(notes, "clock", lambda: clock[0])
    only_rule(free_tier, 3)
    assert [api.get(URL).status_code for _ in range(8)] == [200] * 3 + [429] * 5
    assert tally  # Four refusals served from memory, not in the store yet.
    clock[0] += 2  # The note stops serving: the next request asks the store, which refuses again.
    assert api.get(URL).status_code == 429
    assert not tally
    prefix = APIKey.objects.get().prefix
    assert totals(account) == {(prefix, "read"): (3, 6, {"all-60s": 6})}


@pytest.mark.parametrize("where", ["setting", "tier"])
def test_shadow_mode_admissions_count_as_admitted(backend, account, free_tier, api, settings, where):
    only_rule(free_tier, 3)
    if where == "setting":
        settings.RATELIMIT_TIERS_SHADOW = True
    else:
        free_tier.shadow = True
        free_tier.save()
    assert [api.get(URL).status_code for _ in range(6)] == [200] * 6
    assert totals(account) == {(APIKey.objects.get().prefix, "read"): (6, 0, {})}


class ThreeAMinute(UserRateThrottle):
    rate = "3/min"


class Combined(APIView):
    authentication_classes = [APIKeyAuthentication]
    throttle_classes = [TierRateThrottle, ThreeAMinute]

    def get(self, request):
        return Response({})


def test_an_admission_another_throttle_refused_counts_as_refused(backend, account, free_tier):
    only_rule(free_tier, 60)
    key, raw_key = APIKey.objects.create_key(account=account, name="combined")
    view = RateLimitHeadersMiddleware(Combined.as_view())
    responses = [
        view(APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Api-Key {raw_key}")) for _ in range(5)
    ]
    assert [r.status_code for r in responses] == [200] * 3 + [429] * 2
    assert totals(account) == {(key.prefix, "read"): (3, 2, {OTHER_THROTTLE: 2})}


def test_with_the_ledger_off_nothing_is_counted(backend, account, free_tier, api, settings):
    settings.RATELIMIT_TIERS_LEDGER_DAYS = 0
    only_rule(free_tier, 1)
    assert [api.get(URL).status_code for _ in range(3)] == [200, 429, 429]
    assert tally_flush.flush() == 0
    settings.RATELIMIT_TIERS_LEDGER_DAYS = 7
    assert totals(account) == {}


@pytest.mark.redis
def test_the_ledger_hash_expires_its_retention_after_its_hour(redis_cache, account, free_tier, settings):
    settings.RATELIMIT_TIERS_LEDGER_DAYS = 2
    only_rule(free_tier, 1)
    api = key_client(APIKey.objects.create_key(account=account, name="k")[1])
    assert [api.get(URL).status_code for _ in range(2)] == [200, 429]
    client = get_redis_connection("default")
    (key,) = client.keys(f"*{ledger_key(account_tag(account.pk))}:*")
    hour = int(key.decode().rsplit(":", 1)[1])
    assert client.ttl(key) == pytest.approx((hour + 1) * HOUR + 2 * 86400 - client.time()[0], abs=2)


def test_a_late_batch_adds_its_refusals_but_keeps_the_last_refusal(backend, account, free_tier):
    only_rule(free_tier, 1)
    key = APIKey.objects.create_key(account=account, name="k")[0]
    storage = get_storage()
    storage.hit(key.prefix, account.pk, "read")
    refused = storage.hit(key.prefix, account.pk, "read").decision
    at = round(refused.now * 1000)
    earlier = Refusals("all-60s", 3, at - 1)
    storage.add_refusals(TallyKey(key.prefix, account.pk, "read"), [earlier, earlier._replace(n=1)])
    (row,) = usage.hourly(*around_now(), [account.pk])
    assert (row.admitted, row.refused, row.refused_by) == (1, 5, {"all-60s": 5})
    assert row.last_refused == datetime.fromtimestamp(at / 1000, tz=timezone.utc)


def test_an_admitted_check_carries_the_refusals_served_from_memory_too(backend, account, free_tier):
    only_rule(free_tier, 3)
    key = APIKey.objects.create_key(account=account, name="k")[0]
    storage = get_storage()
    admitted = storage.hit(key.prefix, account.pk, "read").decision
    served = admitted._replace(allowed=False, policy="all-60s")  # As a note would have served it.
    tally.add(key.prefix, account.pk, "read", served)
    tally.add(key.prefix, account.pk, "read", served)
    assert storage.hit(key.prefix, account.pk, "read").allowed
    assert not tally
    assert totals(account) == {(key.prefix, "read"): (2, 2, {"all-60s": 2})}


def test_refusals_carried_by_a_check_that_stops_early_are_not_lost(backend, account, free_tier):
    only_rule(free_tier, 3)
    key = APIKey.objects.create_key(account=account, name="k")[0]
    storage = get_storage()
    served = storage.hit(key.prefix, account.pk, "read").decision._replace(allowed=False, policy="all-60s")
    tally.add(key.prefix, account.pk, "read", served)
    APIKey.objects.filter(pk=key.pk).revoke()  # The next check answers "revoked", before any counting.
    assert storage.hit(key.prefix, account.pk, "read").state == "revoked"
    tally_flush.flush()
    assert totals(account) == {(key.prefix, "read"): (1, 1, {"all-60s": 1})}
