"""Every route of the five APIs, with every method, answers malformed input with a 4xx, never a
500: bodies that are not objects, envelopes that are not objects, and each field of the
resource's own body set to a value of the wrong type or out of range.

The paths name real objects of each kind (an admin's token), so a request gets past the lookup to
the validation and the service behind it."""

import itertools
import json
import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from apps.instances.api.views import MAX_VERSION, MIN_VERSION, ServerViewSet

pytestmark = pytest.mark.django_db(transaction=True)

SERVICES = re.compile(r"^(compute|image|network|volume|identity)/")
JUNK = [[1], {"a": 1}, 10**30, "a" * 300]
BODIES = [[], "x", None, {"a": 1}]


def routes(resolver=None, prefix=""):
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            yield from routes(pattern, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern)


def path_of(route: str, ids: dict[str, str]) -> str | None:
    """The route with its parameters filled from ``ids`` (by name, else by the collection before
    it); None for a regex route that is not a plain path."""
    segments = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"<\1>", route).strip("^$").replace("\\.", ".").split("/")
    filled = []
    for i, segment in enumerate(segments):
        param = re.fullmatch(r"<(?:\w+:)?(\w+)>", segment)
        if not param:
            filled.append(segment)
            continue
        name = param.group(1)
        filled.append(ids.get(name) or ids.get(segments[i - 1], "no-such-thing"))
    path = "/" + "/".join(filled)
    return None if re.search(r"[()\[\]?*+]", path) else path


def bodies_for(client, path: str) -> list:
    """The generic bad bodies, and the resource's own body with each field set to junk."""
    bodies = list(BODIES)
    shown = client.get(path)
    if shown.status_code != 200 or not shown.get("Content-Type", "").startswith("application/json"):
        return bodies
    body = shown.json()
    if isinstance(body, dict) and len(body) == 1 and isinstance(next(iter(body.values())), dict):
        envelope, fields = next(iter(body.items()))
        bodies += [{envelope: junk} for junk in JUNK]
        bodies += [{envelope: {field: junk}} for field in fields for junk in JUNK]
    elif isinstance(body, dict):
        bodies += [{field: junk} for field in body for junk in JUNK]
    return bodies


def test_no_route_answers_malformed_input_with_a_500(world, network_objects, volume_objects):
    c = APIClient(raise_request_exception=False)
    c.credentials(HTTP_X_AUTH_TOKEN=world.token(world.admin))
    server = str(volume_objects["server"].pk)
    group = c.post("/compute/v2.1/os-server-groups", {"server_group": {"name": "g", "policies": ["affinity"]}},
                   format="json").json()["server_group"]["id"]
    c.post("/compute/v2.1/os-keypairs", {"keypair": {"name": "kp"}}, format="json")
    c.put(f"/compute/v2.1/servers/{server}/tags/t1")
    ids = {"project_id": world.project.pk.hex, "user_id": str(world.member.pk), "member_id": world.project.pk.hex,
           "role_id": "member", "volume_id": str(volume_objects["volumes"].pk),
           "port_id": str(network_objects["ports"].pk), "servers": server, "flavors": world.flavor.id,
           "os-keypairs": "kp", "os-server-groups": group, "images": str(world.image.id), "tags": "t1",
           "users": str(world.member.pk), "projects": world.project.pk.hex, "os-quota-sets": world.project.pk.hex,
           "quotas": world.project.pk.hex}
    ids |= {kind: str(obj.pk) for kind, obj in (network_objects | volume_objects).items() if kind != "server"}

    failures, requests = [], 0
    for route in routes():
        path = SERVICES.match(route.lstrip("^")) and path_of(route, ids)
        if not path:
            continue
        bodies = bodies_for(c, path)
        for method in ("get", "post", "put", "patch", "delete"):
            for body in bodies if method in ("post", "put", "patch") else [None]:
                kwargs = {} if body is None else {"data": json.dumps(body), "content_type": "application/json"}
                resp = getattr(c, method)(path, **kwargs)
                requests += 1
                if resp.status_code == 500:
                    failures.append(f"{method.upper()} {path} {json.dumps(body)[:80]}")
    assert requests > 2000  # the routes were found and filled
    assert not failures, "\n".join(failures)


# The fields the server actions read (Nova's action bodies), each set to junk in turn.
ACTION_FIELDS = ["adminPass", "flavorRef", "imageRef", "name", "metadata", "type", "length", "rescue_image_ref",
                 "state", "backup_type", "rotation", "accessIPv4", "personality", "preserve_ephemeral",
                 "description", "key_name", "user_data", "OS-DCF:diskConfig", "trusted_image_certificates",
                 "networkId", "address"]


def test_no_server_action_answers_malformed_input_with_a_500(world, network_objects, volume_objects):
    """POST /servers/{id}/action is one route with many bodies: each action with a body that is
    junk, and with each field it may read set to junk. The bodies alternate between the lowest
    and the highest microversion (some actions read other fields from some version on), so
    each action and each of its fields meets junk at both."""
    c = APIClient(raise_request_exception=False)
    c.credentials(HTTP_X_AUTH_TOKEN=world.token(world.admin))
    versions = itertools.cycle([f"compute {MIN_VERSION}", f"compute {MAX_VERSION}"])
    path = f"/compute/v2.1/servers/{volume_objects['server'].pk}/action"
    failures, requests = [], 0
    # forceDelete reads no body, and would delete the server every later action posts to.
    for action in [name for name in ServerViewSet.ACTIONS if name != "forceDelete"]:
        bodies = [{action: junk} for junk in [*JUNK, *BODIES]]
        bodies += [{action: {field: junk}} for field in ACTION_FIELDS for junk in [*JUNK, None, True, -1]]
        for body in bodies:
            version = next(versions)
            resp = c.post(path, data=json.dumps(body), content_type="application/json",
                          HTTP_OPENSTACK_API_VERSION=version)
            requests += 1
            if resp.status_code >= 500:
                failures.append(f"{resp.status_code} at {version} {json.dumps(body)[:100]}: {resp.content[:200]!r}")
    assert requests > 3000
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("path,key", [("/compute/v2.1/nothing-here", "itemNotFound"),
                                      ("/volume/v3/p/qos-specs", "itemNotFound"),
                                      ("/network/v2.0/nothing-here", "NeutronError"),
                                      ("/image/v2/nothing-here", "error")])
def test_an_unknown_path_of_a_service_is_its_json_404(world, path, key):
    """Not the portal's HTML page: clients parse the service's error body (`openstack volume qos
    list` printed the page's text)."""
    c = APIClient()
    c.credentials(HTTP_X_AUTH_TOKEN=world.token(world.member))
    for method in ("get", "post", "put", "delete"):
        resp = getattr(c, method)(path)
        assert (resp.status_code, resp["Content-Type"]) == (404, "application/json"), method
        assert resp.json()[key]["message"] == f"The resource {path} could not be found."
