from __future__ import annotations

import math

import pytest
from django.core.cache import caches

from ratelimit_tiers.models import APIKey, Tier
from ratelimit_tiers.storage.cache import CacheStorage
from tests.conftest import URL, key_client, set_rule


def test_free_key_gets_60_then_429(backend, api, account):
    remaining = []
    for _ in range(60):
        response = api.get(URL)
        assert response.status_code == 200
        assert response["X-RateLimit-Limit"] == "60"
        remaining.append(int(response["X-RateLimit-Remaining"]))
    assert remaining == list(range(59, -1, -1))

    response = api.get(URL)
    assert response.status_code == 429
    retry_after = int(response["Retry-After"])
    # The counter (LocMem) may ask for up to window + window / limit seconds near a boundary.
    assert 1 <= retry_after <= 61
    assert response["X-RateLimit-Remaining"] == "0"
    reset = int(response["X-RateLimit-Reset"])
    now = CacheStorage.timer()  # The clock LocMem's counter decides by (Redis's agrees with time.time).
    assert now < reset <= math.ceil(now + retry_after)  # A whole second, rounded up.
    body = response.json()
    assert body["code"] == "rate_limited"
    assert body["limit"] == 60
    assert body["retry_after"] == retry_after
    assert body["reset"] == reset
    assert "60 requests per 60 seconds" in body["detail"]

    # A second key of the same account has its own counter.
    other = key_client(APIKey.objects.create_key(account=account, name="second")[1])
    response = other.get(URL)
    assert response.status_code == 200
    assert response["X-RateLimit-Remaining"] == "59"


def test_refused_requests_do_not_consume_quota(backend, api, account, free_tier):
    set_rule(free_tier, 2)
    assert [api.get(URL).status_code for _ in range(5)] == [200, 200, 429, 429, 429]
    from ratelimit_tiers.storage import get_storage

    prefix = APIKey.objects.get().prefix
    decision = get_storage().peek(prefix, account.pk, "read").decision
    assert decision is not None
    assert decision.remaining == 0
    assert decision.limit == 2


def test_failed_requests_count(backend, api, free_tier):
    set_rule(free_tier, 2)
    assert api.get(f"{URL}999/").status_code == 404
    response = api.get(f"{URL}998/")
    assert response.status_code == 404
    assert response["X-RateLimit-Remaining"] == "0"
    assert api.get(URL).status_code == 429
    assert api.post(URL, {"name": ""}, format="json").status_code == 400
    assert api.post(URL, {"name": ""}, format="json")["X-RateLimit-Remaining"] == "0"


def test_categories_have_their_own_limits_and_counters(backend, api, free_tier):
    set_rule(free_tier, 1, category="write")
    set_rule(free_tier, 1, category="delete")
    assert api.post(URL, {"name": "a"}, format="json").status_code == 201
    assert api.post(URL, {"name": "b"}, format="json").status_code == 429
    item = api.get(URL)
    assert item.status_code == 200
    assert item["X-RateLimit-Limit"] == "60"
    first = api.delete(f"{URL}{item.json()[0]['id']}/")
    assert first.status_code == 204
    assert first["X-RateLimit-Limit"] == "1"
    assert api.delete(f"{URL}{item.json()[0]['id']}/").status_code == 429


def test_view_can_name_its_category(backend, account, free_tier, rf):
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from ratelimit_tiers.authentication import APIKeyAuthentication
    from ratelimit_tiers.throttling import TierRateThrottle

    set_rule(free_tier, 1, category="auth")

    class TokenView(APIView):
        authentication_classes = [APIKeyAuthentication]
        throttle_classes = [TierRateThrottle]
        ratelimit_category = "auth"

        def post(self, request):
            return Response({"token": "t"})

    raw_key = APIKey.objects.create_key(account=account, name="k")[1]
    view = TokenView.as_view()
    statuses = [
        view(rf.post("/token/", HTTP_AUTHORIZATION=f"Api-Key {raw_key}")).status_code for _ in range(2)
    ]
    assert statuses == [200, 429]


def test_account_override_replaces_tier_limits(backend, api, account):
    set_rule(account, 7)
    assert api.get(URL)["X-RateLimit-Limit"] == "7"


def test_admin_edits_apply_on_the_next_request(backend, api, free_tier, account):
    assert api.get(URL)["X-RateLimit-Limit"] == "60"
    set_rule(free_tier, 120)
    response = api.get(URL)
    assert response["X-RateLimit-Limit"] == "120"
    # Earlier requests still count under the new limit.
    assert response["X-RateLimit-Remaining"] == "118"
    account.tier = Tier.objects.get(name="Pro")
    account.save()
    assert api.get(URL)["X-RateLimit-Limit"] == "1000"


def test_revocation_applies_on_the_next_request(backend, api):
    assert api.get(URL).status_code == 200
    key = APIKey.objects.get()
    key.revoked = True
    key.save()
    response = api.get(URL)
    assert response.status_code == 401
    assert response.json()["code"] == "revoked"


def test_disabled_account_and_deleted_key(backend, api, account):
    assert api.get(URL).status_code == 200
    account.is_active = False
    account.save()
    assert api.get(URL).json()["code"] == "inactive"
    account.is_active = True
    account.save()
    assert api.get(URL).status_code == 200
    APIKey.objects.all().delete()
    assert api.get(URL).status_code == 401


def test_expired_key(backend, account):
    from datetime import timedelta

    from django.utils import timezone

    key, raw_key = APIKey.objects.create_key(account=account, name="k")
    client = key_client(raw_key)
    assert client.get(URL).status_code == 200
    key.expires_at = timezone.now() - timedelta(seconds=1)
    key.save()
    response = client.get(URL)
    assert response.status_code == 401
    assert response.json()["code"] == "expired"


def test_steady_state_runs_no_sql(backend, api):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    api.get(URL)  # Warm: resolves identity and policy.
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    from ratelimit_tiers.authentication import APIKeyAuthentication
    from ratelimit_tiers.throttling import TierRateThrottle

    class Plain(APIView):
        authentication_classes = [APIKeyAuthentication]
        throttle_classes = [TierRateThrottle]

        def get(self, request):
            return Response({})

    header = api._credentials["HTTP_AUTHORIZATION"]
    view = Plain.as_view()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert view(APIRequestFactory().get("/", HTTP_AUTHORIZATION=header)).status_code == 200
    assert len(queries) == 0


def test_requests_without_a_key_are_not_throttled_here(db):
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    from ratelimit_tiers.throttling import TierRateThrottle

    class Open(APIView):
        authentication_classes = []
        permission_classes = []
        throttle_classes = [TierRateThrottle]

        def get(self, request):
            return Response({})

    request = APIRequestFactory().get("/")
    response = Open.as_view()(request)
    assert response.status_code == 200
    assert not hasattr(request, "ratelimit")  # Nothing decided, so nothing for the middleware.
    assert not [h for h in response.headers if h.startswith("X-RateLimit")]


def test_exact_algorithm_on_locmem_falls_back_to_counter(api, free_tier):
    set_rule(free_tier, 1, algorithm="exact")
    assert [api.get(URL).status_code for _ in range(2)] == [200, 429]


@pytest.mark.redis
@pytest.mark.parametrize("algorithm", ["exact", "counter"])
def test_both_algorithms_on_redis(redis_cache, api, free_tier, algorithm):
    set_rule(free_tier, 3, algorithm=algorithm)
    statuses = [api.get(URL).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_store_outage_fails_open_by_default(broken_store, api, caplog):
    caplog.set_level("WARNING", logger="ratelimit_tiers")
    from ratelimit_tiers import throttling

    throttling._last_outage_log = 0.0
    response = api.get(URL)
    assert response.status_code == 200
    assert "X-RateLimit-Limit" not in response  # Not invented when unknown.
    assert "failing open" in caplog.text
    api.get(URL)
    assert caplog.text.count("failing open") == 1  # Not one warning per request.


def test_store_outage_can_fail_closed(broken_store, settings, api):
    settings.RATELIMIT_TIERS_FAIL_OPEN = False
    response = api.get(URL)
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json()["code"] == "ratelimit_unavailable"


def test_locmem_backend_failure_is_not_counted_as_zero(api, monkeypatch):
    # A backend that swallows errors (IGNORE_EXCEPTIONS) answers None: an outage.
    monkeypatch.setattr(type(caches["default"]), "incr", lambda *a, **k: None)
    response = api.get(URL)
    assert response.status_code == 200
    assert "X-RateLimit-Limit" not in response


@pytest.fixture
def dummy_cache(settings, monkeypatch):
    """The rate-limit cache is a DummyCache, in a process that has not logged about it yet."""
    from ratelimit_tiers.storage import dummy

    settings.CACHES = {
        **settings.CACHES,
        "dummy": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
    }
    settings.RATELIMIT_TIERS_CACHE = "dummy"
    monkeypatch.setattr(dummy, "_logged_in", None)


def test_dummy_cache_fails_open_without_invented_headers(dummy_cache, api, caplog):
    # Servers run no system checks (E009): the first check says so, once per process.
    caplog.set_level("WARNING", logger="ratelimit_tiers")
    responses = [api.get(URL) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert not [h for r in responses for h in r.headers if "ratelimit" in h.lower()]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "DummyCache" in errors[0].getMessage()
    assert "admitted without X-RateLimit-* headers" in errors[0].getMessage()


def test_dummy_cache_can_fail_closed(dummy_cache, settings, api, caplog):
    settings.RATELIMIT_TIERS_FAIL_OPEN = False
    assert [api.get(URL).status_code for _ in range(2)] == [503, 503]
    assert "answered 503" in caplog.text


@pytest.mark.parametrize("tier_first", [True, False], ids=["tier-first", "drf-first"])
@pytest.mark.parametrize("algorithm", ["exact", "counter"])
def test_requests_another_throttle_refuses_cost_no_tier_quota(
    backend, account, free_tier, tier_first, algorithm
):
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.throttling import UserRateThrottle
    from rest_framework.views import APIView

    from ratelimit_tiers.authentication import APIKeyAuthentication
    from ratelimit_tiers.middleware import RateLimitHeadersMiddleware
    from ratelimit_tiers.storage import get_storage
    from ratelimit_tiers.throttling import TierRateThrottle

    set_rule(free_tier, 60, algorithm=algorithm)

    class ThreeAMinute(UserRateThrottle):
        rate = "3/min"

    class Combined(APIView):
        authentication_classes = [APIKeyAuthentication]
        throttle_classes = (
            [TierRateThrottle, ThreeAMinute] if tier_first else [ThreeAMinute, TierRateThrottle]
        )

        def get(self, request):
            return Response({})

    key, raw_key = APIKey.objects.create_key(account=account, name="combined")
    view = RateLimitHeadersMiddleware(Combined.as_view())
    responses = [
        view(APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Api-Key {raw_key}")) for _ in range(10)
    ]
    assert [r.status_code for r in responses] == [200] * 3 + [429] * 7
    assert [r["X-RateLimit-Remaining"] for r in responses[:3]] == ["59", "58", "57"]
    for refused in responses[3:]:
        # DRF's throttle refused: its Retry-After, and no tier header saying requests remain.
        assert 1 <= int(refused["Retry-After"]) <= 60
        assert not [h for h in refused.headers if h.startswith("X-RateLimit")]
    # The seven refusals cost the key's tier quota nothing.
    assert get_storage().peek(key.prefix, account.pk, "read").decision.remaining == 57


@pytest.mark.parametrize("tier_first", [True, False], ids=["tier-first", "drf-first"])
def test_a_tier_refusal_waits_for_the_longest_throttle_of_the_view(backend, account, free_tier, tier_first):
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.throttling import BaseThrottle
    from rest_framework.views import APIView

    from ratelimit_tiers.authentication import APIKeyAuthentication
    from ratelimit_tiers.middleware import RateLimitHeadersMiddleware
    from ratelimit_tiers.throttling import TierRateThrottle

    set_rule(free_tier, 1)

    class SecondRequestWaitsFiveMinutes(BaseThrottle):
        calls = 0

        def allow_request(self, request, view):
            type(self).calls += 1
            return type(self).calls == 1

        def wait(self):
            return 299.5

    class Combined(APIView):
        authentication_classes = [APIKeyAuthentication]
        throttle_classes = (
            [TierRateThrottle, SecondRequestWaitsFiveMinutes]
            if tier_first
            else [SecondRequestWaitsFiveMinutes, TierRateThrottle]
        )

        def get(self, request):
            return Response({})

    _key, raw_key = APIKey.objects.create_key(account=account, name="combined")
    view = RateLimitHeadersMiddleware(Combined.as_view())
    first, refused = (
        view(APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Api-Key {raw_key}")) for _ in range(2)
    )
    assert (first.status_code, refused.status_code) == (200, 429)
    # DRF asked both throttles (DRF's contract), and the 429 says the longest wait, in this app's body.
    assert SecondRequestWaitsFiveMinutes.calls == 2
    assert refused["Retry-After"] == "300"
    assert refused.data["code"] == "rate_limited"
    assert refused.data["retry_after"] == 300
    assert refused["X-RateLimit-Remaining"] == "0"


class Refuses:
    """A throttle of another app that refuses every request."""

    def allow_request(self, request, view):
        return False

    def wait(self):
        return 30.0


def items_view(**attributes):
    """A DRF view of this app's authentication and ``attributes`` (its throttles), answering 200."""
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from ratelimit_tiers.authentication import APIKeyAuthentication

    def get(self, request):
        return Response({})

    attributes = {"authentication_classes": [APIKeyAuthentication], "get": get, **attributes}
    return type("Items", (APIView,), attributes)


def remaining(api):
    from ratelimit_tiers.storage import get_storage

    key = APIKey.objects.get(prefix=api._credentials["HTTP_AUTHORIZATION"][8:20])
    return get_storage().peek(key.prefix, key.account_id, "read").decision.remaining


def send(view, api):
    from rest_framework.test import APIRequestFactory

    return view(APIRequestFactory().get("/", HTTP_AUTHORIZATION=api._credentials["HTTP_AUTHORIZATION"]))


def test_a_view_whose_only_throttle_is_ours_is_not_wrapped(backend, api):
    from rest_framework.test import APIRequestFactory

    from ratelimit_tiers.throttling import TierRateThrottle

    view = items_view(throttle_classes=[TierRateThrottle])()
    request = view.initialize_request(
        APIRequestFactory().get("/", HTTP_AUTHORIZATION=api._credentials["HTTP_AUTHORIZATION"])
    )
    view.request = request
    view.check_throttles(request)
    # No other throttle can refuse: nothing to give back, so DRF's own throttled() stays.
    assert "throttled" not in vars(view)
    assert remaining(api) == 59


def test_another_throttle_set_per_view_instance_still_gets_its_refusal_given_back(backend, api):
    from ratelimit_tiers.throttling import TierRateThrottle

    Items = items_view(throttle_classes=[TierRateThrottle])
    assert send(Items.as_view(), api).status_code == 200  # The class alone: ours is its only throttle.
    assert remaining(api) == 59
    # The same class, given another throttle by as_view(): that one refuses, the tier's count is given back.
    response = send(Items.as_view(throttle_classes=[TierRateThrottle, Refuses]), api)
    assert response.status_code == 429
    assert response["Retry-After"] == "30"
    assert remaining(api) == 59


def test_a_view_that_picks_its_throttles_gets_refusals_given_back(backend, api):
    from ratelimit_tiers.throttling import TierRateThrottle

    Items = items_view(
        throttle_classes=[TierRateThrottle],  # What it says; what it does is get_throttles().
        get_throttles=lambda self: [TierRateThrottle(), Refuses()],
    )
    response = send(Items.as_view(), api)
    assert response.status_code == 429
    assert response["Retry-After"] == "30"
    assert remaining(api) == 60
