from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from ratelimit_tiers.models import APIKey
from tests.conftest import URL


def get(header=None, name="HTTP_AUTHORIZATION"):
    client = APIClient()
    return client.get(URL, **({name: header} if header is not None else {}))


def test_missing_key_is_401(db):
    response = get()
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.parametrize(
    "header", ["Api-Key", "Api-Key ", "Api-Key nope", "Api-Key a.b", "api-key " + "x" * 500]
)
def test_malformed_key_is_401_without_sql(db, header, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = get(header)
    assert response.status_code == 401
    assert response.json()["code"] == "malformed_key"


def test_unknown_and_wrong_secret_are_401(account, raw_key):
    prefix = raw_key.split(".")[0]
    assert get(f"Api-Key {prefix}.{'A' * 43}").json()["code"] == "unknown_key"
    assert get(f"Api-Key {'Z' * 12}.{'A' * 43}").json()["code"] == "unknown_key"
    assert get(f"Api-Key {raw_key}").status_code == 200


def test_keyword_is_case_insensitive_and_other_schemes_are_ignored(raw_key):
    assert get(f"api-key {raw_key}").status_code == 200
    # A Bearer token is someone else's business: no key, so 401 "not provided".
    response = get(f"Bearer {raw_key}")
    assert response.status_code == 401
    assert "code" not in response.json()


def test_custom_header_with_bare_key(settings, raw_key):
    settings.RATELIMIT_TIERS_KEY_HEADER = "X-Api-Key"
    settings.RATELIMIT_TIERS_KEY_KEYWORD = ""
    assert get(raw_key, name="HTTP_X_API_KEY").status_code == 200
    assert get(f"Api-Key {raw_key}").status_code == 401


def test_request_user_is_the_account(api, account):
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    from ratelimit_tiers.authentication import APIKeyAuthentication

    class WhoAmI(APIView):
        authentication_classes = [APIKeyAuthentication]
        throttle_classes = []

        def get(self, request):
            user, key = request.user, request.auth
            return Response({"account": str(user), "id": user.pk, "prefix": key.prefix})

    header = api._credentials["HTTP_AUTHORIZATION"]
    data = WhoAmI.as_view()(APIRequestFactory().get("/", HTTP_AUTHORIZATION=header)).data
    assert data == {"account": "acme", "id": account.pk, "prefix": APIKey.objects.get().prefix}


def test_unthrottled_view_still_checks_revocation(api):
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    from ratelimit_tiers.authentication import APIKeyAuthentication

    class Unthrottled(APIView):
        authentication_classes = [APIKeyAuthentication]
        throttle_classes = []

        def get(self, request):
            return Response({})

    header = api._credentials["HTTP_AUTHORIZATION"]
    view = Unthrottled.as_view()
    assert view(APIRequestFactory().get("/", HTTP_AUTHORIZATION=header)).status_code == 200
    key = APIKey.objects.get()
    key.revoked = True
    key.save()
    response = view(APIRequestFactory().get("/", HTTP_AUTHORIZATION=header))
    assert response.status_code == 401
    assert response.data["code"] == "revoked"


def whoami(raw_key):
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from ratelimit_tiers.authentication import APIKeyAuthentication

    request = Request(APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Api-Key {raw_key}"))
    user, identity = APIKeyAuthentication().authenticate(request)
    return user.name, identity.account_id


def test_identity_cache_entries_expire(account, raw_key, monkeypatch):
    from ratelimit_tiers.identity import IDENTITY_TTL, identities

    now = [1000.0]
    monkeypatch.setattr(identities, "clock", lambda: now[0])
    assert whoami(raw_key) == ("acme", account.pk)
    # A change this process sends no signal for (another process, update(), raw SQL)...
    other = account.tier.accounts.create(name="globex")
    APIKey.objects.update(account=other)
    Account = type(account)
    Account.objects.filter(pk=other.pk).update(name="globex inc")
    now[0] += IDENTITY_TTL - 0.1
    assert whoami(raw_key) == ("acme", account.pk)  # ...is unseen for up to IDENTITY_TTL...
    now[0] += 0.1
    assert whoami(raw_key) == ("globex inc", other.pk)  # ...and seen after it.


def test_saves_in_this_process_refresh_identities_at_once(account, raw_key):
    assert whoami(raw_key) == ("acme", account.pk)
    account.name = "acme corp"
    account.save()
    assert whoami(raw_key) == ("acme corp", account.pk)
    other = account.tier.accounts.create(name="globex")
    key = APIKey.objects.get()
    key.account = other
    key.save()
    assert whoami(raw_key) == ("globex", other.pk)


def test_authentication_reads_the_throttle_classes_without_building_throttles(api):
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    from ratelimit_tiers.authentication import APIKeyAuthentication
    from ratelimit_tiers.throttling import TierRateThrottle

    built = []

    class CountedThrottle(TierRateThrottle):
        def __init__(self):
            built.append(self)

    class Throttled(APIView):
        authentication_classes = [APIKeyAuthentication]
        throttle_classes = [CountedThrottle]

        def get(self, request):
            return Response({})

    header = api._credentials["HTTP_AUTHORIZATION"]
    assert Throttled.as_view()(APIRequestFactory().get("/", HTTP_AUTHORIZATION=header)).status_code == 200
    assert len(built) == 1  # DRF's check_throttles builds it; authentication only read the class.


def test_a_view_that_picks_its_throttles_is_asked_for_them(api):
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    from ratelimit_tiers.authentication import APIKeyAuthentication
    from ratelimit_tiers.throttling import TierRateThrottle

    class DropsTheTierThrottle(APIView):
        authentication_classes = [APIKeyAuthentication]
        throttle_classes = [TierRateThrottle]

        def get_throttles(self):
            return []  # So no throttle checks the key: authentication must.

        def get(self, request):
            return Response({})

    header = api._credentials["HTTP_AUTHORIZATION"]
    APIKey.objects.all().revoke()
    response = DropsTheTierThrottle.as_view()(APIRequestFactory().get("/", HTTP_AUTHORIZATION=header))
    assert response.status_code == 401
    assert response.data["code"] == "revoked"


def test_a_view_given_other_throttle_classes_is_read_anew(api):
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    from ratelimit_tiers.authentication import APIKeyAuthentication
    from ratelimit_tiers.throttling import TierRateThrottle

    class Items(APIView):
        authentication_classes = [APIKeyAuthentication]
        throttle_classes = [TierRateThrottle]

        def get(self, request):
            return Response({})

    header = api._credentials["HTTP_AUTHORIZATION"]
    assert Items.as_view()(APIRequestFactory().get("/", HTTP_AUTHORIZATION=header)).status_code == 200
    APIKey.objects.all().revoke()
    # The same class without the throttle (as_view sets it on the instance): authentication checks the key.
    unthrottled = Items.as_view(throttle_classes=[])
    response = unthrottled(APIRequestFactory().get("/", HTTP_AUTHORIZATION=header))
    assert response.status_code == 401
    assert response.data["code"] == "revoked"
