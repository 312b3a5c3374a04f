from __future__ import annotations

import re
from dataclasses import replace

import pytest
from asgiref.sync import async_to_sync
from django.core import checks
from django.http import HttpResponse
from django.test import AsyncRequestFactory, RequestFactory

from ratelimit_tiers.algorithms import Decision
from ratelimit_tiers.context import RateLimitContext
from ratelimit_tiers.middleware import RateLimitHeadersMiddleware, add_ietf_headers, sf_string
from tests.conftest import URL, set_rule

# draft-ietf-httpapi-ratelimit-headers-10: a List of Items, each a String with Integer parameters.
POLICY_RE = re.compile(r'^"(?P<name>[a-z0-9-]+)";q=(?P<q>\d+);w=(?P<w>\d+)$')
RATELIMIT_RE = re.compile(r'^"(?P<name>[a-z0-9-]+)";r=(?P<r>\d+);t=(?P<t>\d+)$')

ADMITTED = Decision(allowed=True, limit=60, window=60, remaining=59, reset_after=11.2, now=1_700_000_000.5)
REFUSED = Decision(allowed=False, limit=60, window=60, remaining=0, reset_after=4.01, now=1_700_000_000.0)


def decided(request, decision, category="read"):
    request.ratelimit = RateLimitContext(decision, category)
    return request


def test_every_rule_is_its_own_policy_and_refusing_rules_say_their_wait(settings):
    settings.RATELIMIT_TIERS_IETF_HEADERS = True
    burst = replace(REFUSED, limit=10, window=1, reset_after=0.3, policy="all-1s")
    minute = replace(ADMITTED, remaining=7, reset_after=20.5, policy="read-60s")
    day = replace(REFUSED, limit=1000, window=86400, reset_after=4000.2, policy="all-day", quota=True)
    request = RequestFactory().get("/")
    request.ratelimit = RateLimitContext(day, "read", (burst, minute, day))
    response = RateLimitHeadersMiddleware(lambda request: HttpResponse("ok"))(request)
    assert response["RateLimit-Policy"] == '"all-1s";q=10;w=1, "read-60s";q=60;w=60, "all-day";q=1000;w=86400'
    assert response["RateLimit"] == '"all-1s";r=0;t=1, "read-60s";r=7;t=21, "all-day";r=0;t=4001'
    # X-RateLimit-* describe the headline alone.
    assert (response["X-RateLimit-Limit"], response["X-RateLimit-Remaining"]) == ("1000", "0")


def test_sync_middleware_formats_the_decision(settings):
    settings.RATELIMIT_TIERS_IETF_HEADERS = True
    middleware = RateLimitHeadersMiddleware(lambda request: HttpResponse("ok"))
    assert not middleware.async_mode
    response = middleware(decided(RequestFactory().get("/"), ADMITTED))
    assert response["X-RateLimit-Limit"] == "60"
    assert response["X-RateLimit-Remaining"] == "59"
    assert response["X-RateLimit-Reset"] == "1700000012"
    assert response["RateLimit-Policy"] == '"read";q=60;w=60'
    assert response["RateLimit"] == '"read";r=59;t=12'


def test_async_middleware_formats_the_decision(settings):
    settings.RATELIMIT_TIERS_IETF_HEADERS = True

    async def view(request):
        return HttpResponse("ok")

    middleware = RateLimitHeadersMiddleware(view)
    assert middleware.async_mode
    request = decided(AsyncRequestFactory().get("/"), REFUSED, "write")
    response = async_to_sync(middleware)(request)
    assert response["X-RateLimit-Remaining"] == "0"
    assert response["RateLimit"] == '"write";r=0;t=5'  # On a refusal, t is Retry-After.


@pytest.mark.parametrize("factory", [RequestFactory, AsyncRequestFactory])
def test_requests_without_a_decision_get_no_headers(factory, settings):
    settings.RATELIMIT_TIERS_IETF_HEADERS = True

    async def async_view(request):
        return HttpResponse("ok")

    if factory is AsyncRequestFactory:
        response = async_to_sync(RateLimitHeadersMiddleware(async_view))(factory().get("/"))
    else:
        response = RateLimitHeadersMiddleware(lambda request: HttpResponse("ok"))(factory().get("/"))
    assert not [h for h in response.headers if "ratelimit" in h.lower()]


def test_ietf_headers_are_off_by_default(api):
    response = api.get(URL)
    assert response["X-RateLimit-Limit"] == "60"
    assert "RateLimit" not in response
    assert "RateLimit-Policy" not in response


def test_ietf_headers_agree_with_the_legacy_ones_end_to_end(api, free_tier, settings):
    settings.RATELIMIT_TIERS_IETF_HEADERS = True
    set_rule(free_tier, 2)  # Replaces Free's all-categories 60/min.
    set_rule(free_tier, 5, category="write")
    for expected_remaining in (1, 0):
        response = api.get(URL)
        policy = POLICY_RE.match(response["RateLimit-Policy"])
        current = RATELIMIT_RE.match(response["RateLimit"])
        assert policy and current
        assert policy["name"] == current["name"] == "all-60s"  # Named after the rule.
        assert (int(policy["q"]), int(policy["w"])) == (2, 60)
        assert int(current["r"]) == expected_remaining == int(response["X-RateLimit-Remaining"])
        # Until Remaining grows: on the counter (LocMem), up to two windows for the first request.
        assert 0 <= int(current["t"]) <= 2 * 60
    refused = api.get(URL)
    assert refused.status_code == 429
    assert RATELIMIT_RE.match(refused["RateLimit"])["t"] == refused["Retry-After"]
    written = api.post(URL, {"name": "x"}, format="json")
    assert written["RateLimit-Policy"] == '"write-60s";q=5;w=60'
    assert RATELIMIT_RE.match(written["RateLimit"])["r"] == "4"


def test_the_throttle_attaches_one_typed_context_to_the_request(api):
    response = api.post(URL, {"name": "x"}, format="json")
    context = response.wsgi_request.ratelimit
    assert isinstance(context, RateLimitContext)
    assert context.category == "write"
    assert str(context.decision.remaining) == response["X-RateLimit-Remaining"]


def test_sf_string_escapes_and_never_fails():
    assert sf_string("read") == '"read"'
    assert sf_string('a"b\\c') == '"a\\"b\\\\c"'
    assert sf_string("café\n") == '"caf__"'
    response = HttpResponse()
    add_ietf_headers(response, (ADMITTED,), "bulk export")
    assert response["RateLimit-Policy"] == '"bulk export";q=60;w=60'


def test_ietf_headers_setting_is_checked(settings, db):
    settings.RATELIMIT_TIERS_IETF_HEADERS = "yes"
    assert "ratelimit_tiers.E020" in [m.id for m in checks.run_checks()]


def test_async_stack_end_to_end(raw_key, settings):
    """The testproject under Django's ASGI handler: the middleware runs in async mode."""
    from django.test import AsyncClient

    settings.RATELIMIT_TIERS_IETF_HEADERS = True
    client = AsyncClient()
    headers = {"Authorization": f"Api-Key {raw_key}"}
    responses = [async_to_sync(client.get)(URL, headers=headers) for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 200]
    assert [r["X-RateLimit-Remaining"] for r in responses] == ["59", "58"]
    assert responses[1]["RateLimit"].startswith('"all-60s";r=58;t=')
