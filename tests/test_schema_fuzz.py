"""Schemathesis against the testproject's OpenAPI schema: no generated request gets a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from ratelimit_tiers.models import Account, APIKey, Tier
from tests.conftest import set_rule


@pytest.fixture
def web_app(db):
    from testproject.wsgi import application

    # As Django's test client does: the start and end of a request must not close
    # the connection that holds the test's transaction (SQLite's in-memory test
    # database ignores the close; PostgreSQL's connection would really close).
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/", application)
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


schema = schemathesis.pytest.from_fixture("web_app")


@pytest.fixture
def key_header(db):
    account = Account.objects.create(name="fuzz", tier=Tier.objects.get(name="Free"))
    set_rule(account, 100_000)  # Every category: the fuzzer must never meet a 429.
    return {"Authorization": f"Api-Key {APIKey.objects.create_key(account=account, name='fuzz')[1]}"}


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_with_a_key(case, key_header):
    response = case.call(headers=key_header)
    case.validate_response(response, checks=[not_a_server_error])


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_without_a_valid_key(case, db):
    response = case.call(headers={"Authorization": "Api-Key AAAAAAAAAAAA." + "a" * 43})
    case.validate_response(response, checks=[not_a_server_error])
    assert 400 <= response.status_code < 500  # 401, 429 once over the per-IP rate, or 404 (no route)
