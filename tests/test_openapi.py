from __future__ import annotations

import json
from io import StringIO

from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

LIMIT_HEADERS = {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}


def generate():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)
    return schema


def test_throttled_operations_document_headers_and_429(db):
    schema = generate()
    paths = schema["paths"]
    operations = [op for path, ops in paths.items() if path.startswith("/api/items/") for op in ops.values()]
    # list, create, retrieve, update, partial_update, destroy; search and export.
    assert len(operations) == 8
    for operation in operations:
        responses = operation["responses"]
        success = [code for code in responses if code.startswith("2")]
        assert success
        for code in success:
            assert set(responses[code]["headers"]) == LIMIT_HEADERS
        too_many = responses["429"]
        assert set(too_many["headers"]) == LIMIT_HEADERS | {"Retry-After"}
        body = too_many["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/RateLimitExceeded"}
        assert operation["security"] == [{"ApiKeyAuth": []}]
    components = schema["components"]
    assert set(components["headers"]) == LIMIT_HEADERS | {"Retry-After"}
    assert components["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
    assert set(components["schemas"]["RateLimitExceeded"]["required"]) == {
        "code",
        "detail",
        "limit",
        "window",
        "retry_after",
        "reset",
    }
    assert components["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Api-Key <prefix>.<secret>`",
    }


def test_ietf_fields_and_key_header_follow_the_settings(db, settings):
    settings.RATELIMIT_TIERS_IETF_HEADERS = True
    settings.RATELIMIT_TIERS_KEY_HEADER = "X-Api-Key"
    settings.RATELIMIT_TIERS_KEY_KEYWORD = ""
    schema = generate()
    ok = schema["paths"]["/api/items/"]["get"]["responses"]["200"]
    assert {"RateLimit-Policy", "RateLimit"} <= set(ok["headers"])
    scheme = schema["components"]["securitySchemes"]["ApiKeyAuth"]
    assert (scheme["name"], scheme["description"]) == ("X-Api-Key", "`<prefix>.<secret>`")


def test_unthrottled_views_are_left_alone(db):
    from django.urls import path
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class Health(APIView):
        throttle_classes = []
        permission_classes = []

        def get(self, request):
            return Response({})

    schema = SchemaGenerator(patterns=[path("health/", Health.as_view())]).get_schema(
        request=None, public=True
    )
    responses = schema["paths"]["/health/"]["get"]["responses"]
    assert "429" not in responses
    assert "headers" not in responses["200"]


def test_management_command_and_schema_url(client, db):
    out = StringIO()
    call_command("spectacular", "--format", "openapi-json", "--validate", stdout=out)
    assert "429" in json.loads(out.getvalue())["paths"]["/api/items/"]["get"]["responses"]
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    assert "RateLimitExceeded" in response.content.decode()


def test_the_status_view_documents_its_body_and_errors(db):
    schema = generate()
    operation = schema["paths"]["/api/ratelimit/"]["get"]
    responses = operation["responses"]
    assert set(responses) == {"200", "401", "429", "503"}
    assert "headers" not in responses["200"]  # Not throttled by TierRateThrottle: no X-RateLimit-*.
    assert set(responses["429"]["headers"]) == {"Retry-After"}
    assert responses["429"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RateLimitExceeded"
    }
    components = schema["components"]["schemas"]
    body = components["RateLimitStatus"]
    assert body["properties"]["rules"]["items"] == {"$ref": "#/components/schemas/RuleStatus"}
    assert set(components["RuleStatus"]["required"]) == {
        "category",
        "name",
        "rate",
        "scope",
        "limit",
        "used",
        "remaining",
        "reset",
        "quota",
    }
    assert operation["security"] == [{"ApiKeyAuth": []}]


def test_a_costly_view_documents_its_403_and_429_bodies_name_the_rule(db):
    schema = generate()
    export = schema["paths"]["/api/items/export/"]["get"]["responses"]
    assert export["403"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RequestTooExpensive"
    }
    assert "403" not in schema["paths"]["/api/items/"]["get"]["responses"]
    components = schema["components"]["schemas"]
    code = components["RateLimitExceeded"]["properties"]["code"]
    assert "policy" in components["RateLimitExceeded"]["properties"]
    # drf-spectacular may move an enum to a component of its own.
    enum = code.get("enum") or components[code["allOf"][0]["$ref"].rsplit("/", 1)[1]]["enum"]
    assert enum == ["rate_limited", "quota_exceeded"]
    search = schema["paths"]["/api/items/search/"]["get"]
    assert [p["name"] for p in search["parameters"]] == ["q"]
