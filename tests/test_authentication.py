from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from ratelimit_tiers.models import APIKey

URL = "/api/items/"


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
