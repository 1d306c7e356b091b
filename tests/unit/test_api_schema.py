"""The published API schema (drf-spectacular) builds: every view can be introspected without a
request, and the schema lists every service's paths."""

import pytest


@pytest.mark.django_db
def test_schema_builds_and_lists_every_service(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for prefix in ("/identity/v3/", "/compute/v2.1/", "/image/v2/", "/network/v2.0/"):
        assert any(p.startswith(prefix) for p in paths), prefix
