"""Every route of the compute API, with every method: without a token Keystone's 401, and to a
member of another project a server of project alpha does not exist (Nova's 404 `itemNotFound`),
nor do its subresources, nor can it be acted on. The routes are read from the URL resolver, so a
new route is checked as soon as it exists."""

import uuid

import pytest
from rest_framework.test import APIClient

from tests.unit.test_api_robustness import path_of, routes

pytestmark = pytest.mark.django_db(transaction=True)

METHODS = ("get", "post", "put", "delete")
# Public documents: the version list and the v2.1 version document need no token (as Nova's).
PUBLIC = {"/compute/", "/compute/v2.1", "/compute/v2.1/"}


def compute_paths(ids: dict) -> list[str]:
    found = []
    for route in routes():
        route = route.lstrip("^")
        if route.startswith("compute/"):
            path = path_of(route, ids)
            if path and path not in PUBLIC:
                found.append(path)
    return found


def test_every_compute_route_needs_a_token(world, volume_objects):
    server = str(volume_objects["server"].pk)
    paths = compute_paths({"servers": server, "flavors": world.flavor.id})
    assert len(paths) > 50  # the routes were found
    anonymous = APIClient(raise_request_exception=False)
    wrong = []
    for path in paths:
        for method in METHODS:
            resp = getattr(anonymous, method)(path, {}, format="json")
            if resp.status_code != 401 or resp.json()["error"]["code"] != 401:
                wrong.append(f"{method.upper()} {path}: {resp.status_code}")
    assert not wrong, "\n".join(wrong)


def test_another_projects_server_is_answered_as_one_that_does_not_exist(world, volume_objects):
    """On every server route and method (and the actions), a member of another project gets what
    a server id that exists nowhere gets: a 404 `itemNotFound`, or the same 400 for a body the
    route refuses before it looks (as Nova validates first), never a 2xx; and nothing happens."""
    server = volume_objects["server"]
    sid, nowhere = str(server.pk), str(uuid.uuid4())
    paths = [p for p in compute_paths({"servers": sid, "flavors": world.flavor.id}) if f"/servers/{sid}" in p]
    assert len(paths) >= 15
    outsider = APIClient(raise_request_exception=False)
    outsider.credentials(HTTP_X_AUTH_TOKEN=world.token(world.outsider, world.other_project))
    actions = ["os-stop", "reboot", "lock", "forceDelete", "createImage", "addFixedIp", "removeSecurityGroup"]
    wrong = []
    for path in paths:
        for method in METHODS:
            bodies = [{name: None} for name in actions] if path.endswith("/action") and method == "post" else [{}]
            for body in bodies:
                real = getattr(outsider, method)(path, body, format="json")
                absent = getattr(outsider, method)(path.replace(sid, nowhere), body, format="json")
                seen = (real.status_code, real.content.replace(sid.encode(), nowhere.encode()))
                if seen != (absent.status_code, absent.content) or real.status_code < 400:
                    wrong.append(f"{method.upper()} {path} {body}: {real.status_code} {real.content[:100]!r}")
                elif real.status_code == 404:
                    assert "itemNotFound" in real.json()
    assert not wrong, "\n".join(wrong)
    server.refresh_from_db()
    assert (server.deleted_at, server.locked, server.task_state) == (None, False, None)  # nothing happened to it
