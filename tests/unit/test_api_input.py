"""Input no database stores is a 400 in every API and in the portal, never a 500.

Marked `database`: `make test` runs these on PostgreSQL too, which refuses a NUL character in
text and jsonb where SQLite stores it."""

import json
from types import SimpleNamespace

import pytest
from django.db import DataError, connection
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from cloudmgr.api.errors import exception_handler

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]

NUL = "a\x00b"


def api(world, user):
    c = APIClient()
    c.credentials(HTTP_X_AUTH_TOKEN=world.token(user))
    return c


def test_a_nul_anywhere_in_a_body_is_a_400_in_each_services_shape(world):
    c = api(world, world.admin)
    project = world.project.pk.hex
    server = {"name": "vm", "imageRef": str(world.image.id), "flavorRef": world.flavor.id}
    bodies = [
        ("/compute/v2.1/servers", {"server": {**server, "name": NUL}}, "badRequest"),
        ("/compute/v2.1/servers", {"server": {**server, "metadata": {NUL: "v"}}}, "badRequest"),  # a key
        ("/compute/v2.1/os-server-groups", {"server_group": {"name": NUL, "policies": ["affinity"]}}, "badRequest"),
        ("/image/v2/images", {"name": "i", "disk_format": "qcow2", "container_format": "bare", "tags": [NUL]},
         "error"),
        (f"/volume/v3/{project}/volumes", {"volume": {"size": 1, "metadata": {"k": NUL}}}, "badRequest"),
        ("/network/v2.0/security-groups", {"security_group": {"name": "sg", "description": NUL}}, "NeutronError"),
        ("/identity/v3/projects", {"project": {"name": NUL}}, "error"),
    ]
    for path, body, error_key in bodies:
        resp = c.post(path, body, format="json")
        assert resp.status_code == 400, (path, resp.content)
        assert "Null characters are not allowed." in json.dumps(resp.json()[error_key]), (path, resp.content)
    assert c.get("/compute/v2.1/servers").json()["servers"] == []  # nothing was made


def test_a_body_nested_too_deep_is_a_400(world):
    body = "[" * 100_000 + "]" * 100_000
    resp = api(world, world.member).post("/compute/v2.1/servers", body, content_type="application/json")
    assert resp.status_code == 400 and "nests too deeply" in resp.json()["badRequest"]["message"]


def test_a_value_the_database_refuses_in_a_path_or_query_is_a_400(world):
    """SQLite stores a NUL, so there these are a plain miss; PostgreSQL refuses it, a 400 there."""
    c = api(world, world.admin)
    refused = connection.vendor == "postgresql"
    for path, error_key in (("/compute/v2.1/flavors/%00", "badRequest"), ("/compute/v2.1/os-keypairs/%00", "badRequest"),
                            ("/network/v2.0/networks?name=%00", "NeutronError"),
                            ("/identity/v3/users?name=%00", "error"), ("/image/v2/images?name=%00", "error")):
        resp = c.get(path)
        if refused:
            assert resp.status_code == 400, (path, resp.content)
            assert "Invalid input" in json.dumps(resp.json()[error_key]), (path, resp.content)
        else:
            assert resp.status_code in (200, 404), (path, resp.content)

    portal = Client()
    portal.force_login(world.admin)
    resp = portal.post("/instances/keypairs/%00/delete/")
    if refused:
        assert resp.status_code == 400 and b"Bad request" in resp.content
    else:
        assert resp.status_code in (302, 404)


@pytest.mark.parametrize("refusal", [DataError("value too long for type character varying(255)"),
                                     OverflowError("Python int too large to convert to SQLite INTEGER")])
def test_what_either_engine_refuses_is_the_services_400(refusal):
    """The net under validation: PostgreSQL's data exceptions and SQLite's integer overflow."""
    request = RequestFactory().get("/compute/v2.1/servers")
    resp = exception_handler(refusal, {"view": SimpleNamespace(error_style="nova"), "request": request})
    assert resp.status_code == 400 and resp.data["badRequest"]["message"] == f"Invalid input: {refusal}"
