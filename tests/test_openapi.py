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
    assert len(operations) == 6  # list, create, retrieve, update, partial_update, destroy.
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
