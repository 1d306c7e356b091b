"""Every Nova microversion change from 2.2 to the advertised maximum, asserted just below and at
its version (docs/compute.md lists them), and POST /servers/{id}/remote-consoles (2.6)."""

import base64
import json
from urllib.parse import unquote

import pytest
from rest_framework.test import APIClient

from apps.hosts.models import Host
from apps.instances.consoles import console_token_consume
from apps.instances.models import Flavor, Instance
from apps.instances.states import VmState
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)

V = "/compute/v2.1"
# Nova's admin-only server attributes of 2.3 (the EC2 API's).
EXTENDED_23 = {"OS-EXT-SRV-ATTR:hostname", "OS-EXT-SRV-ATTR:reservation_id", "OS-EXT-SRV-ATTR:launch_index",
               "OS-EXT-SRV-ATTR:kernel_id", "OS-EXT-SRV-ATTR:ramdisk_id", "OS-EXT-SRV-ATTR:root_device_name",
               "OS-EXT-SRV-ATTR:user_data"}
# Nova's update and rebuild responses (before 2.75): no extension attributes.
BASIC_KEYS = {"id", "name", "status", "tenant_id", "user_id", "metadata", "hostId", "image", "flavor", "created",
              "updated", "addresses", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig", "progress", "links"}


class Api:
    """A client of one user that sends one microversion per call."""

    def __init__(self, world, user, project=None):
        self.client = APIClient()
        self.client.credentials(HTTP_X_AUTH_TOKEN=world.token(user, project))

    def __call__(self, method, path, version, body=None):
        return getattr(self.client, method)(f"{V}{path}", body, format="json",
                                            HTTP_OPENSTACK_API_VERSION=f"compute {version}")


def boot(c, world, name="vm1", version="2.1", **extra):
    resp = c("post", "/servers", version, {"server": {"name": name, "imageRef": str(world.image.id),
                                                      "flavorRef": world.flavor.id, **extra}})
    assert resp.status_code == 202, resp.content
    return resp.json()["server"]["id"]


def nova_error(resp, status):
    assert resp.status_code == status, resp.content
    (kind, body), = resp.json().items()
    assert body["code"] == status and body["message"]
    return kind, body["message"]


def test_version_document_and_negotiation_up_to_2_28(world):
    version = APIClient().get(f"{V}/").json()["version"]
    assert (version["min_version"], version["version"]) == ("2.1", "2.28")
    c = Api(world, world.member)
    resp = c("get", "/flavors", "latest")
    assert resp["OpenStack-API-Version"] == "compute 2.28" and resp["X-OpenStack-Nova-API-Version"] == "2.28"
    assert c("get", "/flavors", "2.28").status_code == 200
    assert c("get", "/flavors", "2.29").status_code == 406


def test_2_28_cpu_info_is_an_object(world):
    """The host CPU its agent reported: a JSON string inside the body below 2.28, an object from it."""
    cpu = {"arch": "x86_64", "model": "kvm64", "vendor": "AMD", "features": ["sse4.2"],
           "topology": {"cells": 1, "sockets": 1, "cores": 2, "threads": 1}}
    Host.objects.filter(pk=make_host().pk).update(cpu_info=cpu, hypervisor_version=7002022)
    c = Api(world, world.admin)
    old = c("get", "/os-hypervisors/detail", "2.27").json()["hypervisors"][0]
    new = c("get", "/os-hypervisors/detail", "2.28").json()["hypervisors"][0]
    assert (json.loads(old["cpu_info"]), new["cpu_info"]) == (cpu, cpu)
    assert old["hypervisor_version"] == new["hypervisor_version"] == 7002022


# -- 2.2: keypair type, create 201 and delete 204 ------------------------------------------------


def test_2_2_keypair_type_and_status_codes(world):
    c = Api(world, world.member)
    resp = c("post", "/os-keypairs", "2.1", {"keypair": {"name": "old"}})
    assert resp.status_code == 200
    assert set(resp.json()["keypair"]) == {"name", "public_key", "fingerprint", "user_id", "private_key"}
    _, message = nova_error(c("post", "/os-keypairs", "2.1", {"keypair": {"name": "typed", "type": "ssh"}}), 400)
    assert "'type'" in message
    assert "type" not in c("get", "/os-keypairs", "2.1").json()["keypairs"][0]["keypair"]
    assert "type" not in c("get", "/os-keypairs/old", "2.1").json()["keypair"]

    resp = c("post", "/os-keypairs", "2.2", {"keypair": {"name": "new"}})
    assert resp.status_code == 201
    assert set(resp.json()["keypair"]) == {"name", "public_key", "fingerprint", "user_id", "private_key", "type"}
    assert resp.json()["keypair"]["type"] == "ssh"
    assert [k["keypair"]["type"] for k in c("get", "/os-keypairs", "2.2").json()["keypairs"]] == ["ssh", "ssh"]
    assert c("get", "/os-keypairs/old", "2.2").json()["keypair"]["type"] == "ssh"
    nova_error(c("post", "/os-keypairs", "2.2", {"keypair": {"name": "k", "type": "dsa"}}), 400)

    assert c("delete", "/os-keypairs/old", "2.1").status_code == 202
    assert c("delete", "/os-keypairs/new", "2.2").status_code == 204
    assert c("get", "/os-keypairs", "2.2").json()["keypairs"] == []


def test_2_2_x509_keypairs_generated_and_imported(world):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    c = Api(world, world.member)
    resp = c("post", "/os-keypairs", "2.2", {"keypair": {"name": "winrm", "type": "x509"}})
    assert resp.status_code == 201, resp.content
    kp = resp.json()["keypair"]
    assert kp["type"] == "x509" and kp["public_key"].startswith("-----BEGIN CERTIFICATE-----")
    cert = x509.load_pem_x509_certificate(kp["public_key"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == world.member.pk.hex
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    upn = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value[0]
    assert upn.value.endswith(f"{world.member.pk.hex}@localhost".encode())
    # The private key is the PKCS#12 bundle (no password) of the key and that certificate.
    key, bundled, _ = pkcs12.load_key_and_certificates(base64.b64decode(kp["private_key"]), None)
    assert bundled == cert and key.public_key().public_numbers() == cert.public_key().public_numbers()
    sha1 = cert.fingerprint(hashes.SHA1()).hex()
    assert kp["fingerprint"] == ":".join(sha1[i:i + 2] for i in range(0, 40, 2))

    resp = c("post", "/os-keypairs", "2.2", {"keypair": {"name": "imported", "type": "x509",
                                                         "public_key": kp["public_key"]}})
    assert resp.status_code == 201 and "private_key" not in resp.json()["keypair"]
    assert resp.json()["keypair"]["fingerprint"] == kp["fingerprint"]
    _, message = nova_error(c("post", "/os-keypairs", "2.2", {"keypair": {"name": "bad", "type": "x509",
                                                                          "public_key": "ssh-ed25519 AAAA"}}), 400)
    assert "X.509" in message


# -- 2.3: extended server attributes for admins --------------------------------------------------


def test_2_3_extended_attributes_for_admins(world):
    make_host()
    member, admin = Api(world, world.member), Api(world, world.admin, world.project)
    user_data = base64.b64encode(b"#!/bin/sh\necho hi\n").decode()
    resp = member("post", "/servers", "2.3", {"server": {"name": "Web_Server.one", "imageRef": str(world.image.id),
                                                         "flavorRef": "42", "min_count": 2, "max_count": 2,
                                                         "user_data": user_data, "return_reservation_id": True}})
    assert resp.status_code == 202
    reservation = resp.json()["reservation_id"]
    assert reservation.startswith("r-") and len(reservation) == 10

    listed = admin("get", f"/servers/detail?reservation_id={reservation}", "2.3").json()["servers"]
    assert len(listed) == 2
    by_name = {srv["name"]: srv for srv in listed}
    first, second = by_name["Web_Server.one-1"], by_name["Web_Server.one-2"]
    assert first["OS-EXT-SRV-ATTR:reservation_id"] == second["OS-EXT-SRV-ATTR:reservation_id"] == reservation
    assert (first["OS-EXT-SRV-ATTR:launch_index"], second["OS-EXT-SRV-ATTR:launch_index"]) == (0, 1)
    assert first["OS-EXT-SRV-ATTR:hostname"] == "web-server-one-1"
    assert first["OS-EXT-SRV-ATTR:user_data"] == user_data
    assert first["OS-EXT-SRV-ATTR:root_device_name"] == "/dev/vda"
    assert first["OS-EXT-SRV-ATTR:kernel_id"] == first["OS-EXT-SRV-ATTR:ramdisk_id"] == ""

    sid = first["id"]
    assert EXTENDED_23 <= set(admin("get", f"/servers/{sid}", "2.3").json()["server"])
    below = admin("get", f"/servers/{sid}", "2.2").json()["server"]
    assert "OS-EXT-SRV-ATTR:host" in below and not EXTENDED_23 & set(below)
    assert not EXTENDED_23 & set(member("get", f"/servers/{sid}", "2.3").json()["server"])  # admins only
    assert member("get", f"/servers?reservation_id={reservation}", "2.1").json()["servers"] != []
    assert member("get", "/servers?reservation_id=r-00000000", "2.1").json()["servers"] == []

    # Nova sets the host name at create: a rename keeps it.
    assert member("put", f"/servers/{sid}", "2.3", {"server": {"name": "renamed"}}).status_code == 200
    assert admin("get", f"/servers/{sid}", "2.3").json()["server"]["OS-EXT-SRV-ATTR:hostname"] == "web-server-one-1"
    single = boot(member, world, name="***")
    body = admin("get", f"/servers/{single}", "2.3").json()["server"]
    assert body["OS-EXT-SRV-ATTR:hostname"] == f"Server-{single}"  # nothing usable in the name
    assert body["OS-EXT-SRV-ATTR:launch_index"] == 0 and body["OS-EXT-SRV-ATTR:user_data"] is None
    assert body["OS-EXT-SRV-ATTR:reservation_id"] not in ("", reservation)


# -- 2.5: ip6 filter for non-admins --------------------------------------------------------------


def test_2_5_ip6_filter_applies_to_non_admins(world):
    make_host()
    member, admin = Api(world, world.member), Api(world, world.admin, world.project)
    sid = boot(member, world)
    # Below 2.5 a non-admin's ip6 is dropped; an admin's applies. Instances have no addresses
    # yet (no ports), so an address filter that applies matches nothing.
    assert [s["id"] for s in member("get", "/servers?ip6=.*", "2.4").json()["servers"]] == [sid]
    assert admin("get", "/servers?ip6=.*", "2.4").json()["servers"] == []
    assert member("get", "/servers?ip6=.*", "2.5").json()["servers"] == []
    assert member("get", "/servers/detail?ip=10%5C.", "2.1").json()["servers"] == []
    nova_error(member("get", "/servers?ip6=(", "2.5"), 400)


# -- 2.6 (and 2.8): remote consoles ----------------------------------------------------------------


def console(c, sid, version, protocol="vnc", kind="novnc", **extra):
    return c("post", f"/servers/{sid}/remote-consoles", version,
             {"remote_console": {"protocol": protocol, "type": kind, **extra}})


def test_2_6_remote_console_is_a_one_time_novnc_url(world, settings):
    make_host()
    c = Api(world, world.member)
    sid = boot(c, world)
    kind, _ = nova_error(console(c, sid, "2.5"), 404)
    assert kind == "itemNotFound"

    resp = console(c, sid, "2.6")
    assert resp.status_code == 200, resp.content
    body = resp.json()["remote_console"]
    assert set(body) == {"protocol", "type", "url"} and (body["protocol"], body["type"]) == ("vnc", "novnc")
    assert body["url"].startswith(f"{settings.CLOUDMGR_CONSOLE_URL}/vnc_lite.html?path=")
    token = unquote(body["url"]).split("token=")[1]
    assert console_token_consume(token) == {"instance_id": sid, "host": "127.0.0.1", "port": 5900}
    assert console_token_consume(token) is None  # one use only
    assert console(c, sid, "latest").status_code == 200


def test_2_6_old_console_actions_are_gone(world):
    make_host()
    c = Api(world, world.member)
    sid = boot(c, world)
    resp = c("post", f"/servers/{sid}/action", "2.5", {"os-getVNCConsole": {"type": "novnc"}})
    assert resp.status_code == 200 and resp.json()["console"]["type"] == "novnc"
    _, message = nova_error(c("post", f"/servers/{sid}/action", "2.5", {"os-getVNCConsole": {}}), 400)
    assert "'type' is a required property" in message
    _, message = nova_error(c("post", f"/servers/{sid}/action", "2.5", {"os-getVNCConsole": {"type": "xvpvnc"}}), 400)
    assert "Invalid console type xvpvnc" in message
    for action, kind in [("os-getSPICEConsole", "spice-html5"), ("os-getSerialConsole", "serial"),
                         ("os-getRDPConsole", "rdp-html5")]:
        _, message = nova_error(c("post", f"/servers/{sid}/action", "2.5", {action: {"type": kind}}), 400)
        assert "Unavailable console type" in message
    for action, kind in [("os-getVNCConsole", "novnc"), ("os-getSPICEConsole", "spice-html5"),
                         ("os-getSerialConsole", "serial"), ("os-getRDPConsole", "rdp-html5")]:
        kind_, _ = nova_error(c("post", f"/servers/{sid}/action", "2.6", {action: {"type": kind}}), 404)
        assert kind_ == "itemNotFound"
    assert c("post", f"/servers/{sid}/action", "2.6", {"os-getConsoleOutput": {}}).status_code == 200


@pytest.mark.parametrize(("protocol", "kind", "expected"), [
    ("spice", "spice-html5", "Unavailable console type spice"),
    ("serial", "serial", "Unavailable console type serial"),
    ("rdp", "rdp-html5", "Unavailable console type rdp"),
    ("vnc", "xvpvnc", "Invalid console type xvpvnc"),
    ("vnc", "spice-html5", "Invalid console type spice-html5"),
    ("telnet", "novnc", "'telnet' is not one of"),
    ("vnc", "vnc_lite", "'vnc_lite' is not one of"),
])
def test_remote_console_bad_protocol_or_type_is_400_with_a_message(world, protocol, kind, expected):
    make_host()
    c = Api(world, world.member)
    sid = boot(c, world)
    kind_, message = nova_error(console(c, sid, "2.6", protocol, kind), 400)
    assert kind_ == "badRequest" and expected in message


def test_remote_console_malformed_bodies_are_400(world):
    make_host()
    c = Api(world, world.member)
    sid = boot(c, world)
    path = f"/servers/{sid}/remote-consoles"
    for body, expected in [({}, "'remote_console' object"), ({"remote_console": "vnc"}, "'remote_console' object"),
                           ({"remote_console": {"protocol": "vnc"}}, "'type' is a required property"),
                           ({"remote_console": {"type": "novnc"}}, "'protocol' is a required property"),
                           ({"remote_console": {"protocol": "vnc", "type": "novnc", "port": 1}}, "'port'")]:
        _, message = nova_error(c("post", path, "2.6", body), 400)
        assert expected in message, (body, message)


def test_2_8_mks_is_a_valid_but_unavailable_console(world):
    make_host()
    c = Api(world, world.member)
    sid = boot(c, world)
    _, message = nova_error(console(c, sid, "2.7", "mks", "webmks"), 400)
    assert "'mks' is not one of" in message
    _, message = nova_error(console(c, sid, "2.8", "mks", "webmks"), 400)
    assert "Unavailable console type mks" in message


def test_remote_console_needs_a_running_server(world):
    make_host()
    c = Api(world, world.member)
    sid = boot(c, world)
    assert c("post", f"/servers/{sid}/action", "2.6", {"os-stop": None}).status_code == 202
    assert c("get", f"/servers/{sid}", "2.6").json()["server"]["status"] == "SHUTOFF"
    kind, message = nova_error(console(c, sid, "2.6"), 409)
    assert kind == "conflictingRequest" and "not ready for a console" in message and "stopped" in message
    assert c("post", f"/servers/{sid}/action", "2.6", {"os-start": None}).status_code == 202
    assert console(c, sid, "2.6").status_code == 200


def test_remote_console_tenancy_and_roles(world):
    make_host()
    c = Api(world, world.member)
    sid = boot(c, world)
    kind, _ = nova_error(console(Api(world, world.outsider, world.other_project), sid, "2.6"), 404)
    assert kind == "itemNotFound"
    nova_error(console(Api(world, world.reader), sid, "2.6"), 403)
    nova_error(console(c, "0" * 32, "2.6"), 404)
    assert APIClient().post(f"{V}/servers/{sid}/remote-consoles", {}, format="json",
                            HTTP_OPENSTACK_API_VERSION="compute 2.6").status_code == 401


# -- 2.7: no tenant access to a public flavor ------------------------------------------------------


def test_2_7_access_to_a_public_flavor_is_a_conflict(world):
    admin = Api(world, world.admin)
    body = {"addTenantAccess": {"tenant": world.project.pk.hex}}
    resp = admin("post", "/flavors/42/action", "2.6", body)
    assert resp.status_code == 200
    assert resp.json()["flavor_access"] == [{"flavor_id": "42", "tenant_id": world.project.pk.hex}]
    assert Flavor.objects.get(pk="42").is_public  # recorded, to no effect: it stays public
    Flavor.objects.get(pk="42").projects.clear()
    kind, message = nova_error(admin("post", "/flavors/42/action", "2.7", body), 409)
    assert kind == "conflictingRequest" and "public flavor" in message
    assert not Flavor.objects.get(pk="42").projects.exists()


# -- 2.9: locked ---------------------------------------------------------------------------------


def test_2_9_locked_in_show_detail_update_and_rebuild(world):
    make_host()
    c = Api(world, world.member)
    sid = boot(c, world)
    assert "locked" not in c("get", f"/servers/{sid}", "2.8").json()["server"]
    assert c("get", f"/servers/{sid}", "2.9").json()["server"]["locked"] is False
    assert c("post", f"/servers/{sid}/action", "2.9", {"lock": None}).status_code == 202
    assert c("get", f"/servers/{sid}", "2.9").json()["server"]["locked"] is True
    assert [s["locked"] for s in c("get", "/servers/detail", "2.9").json()["servers"]] == [True]
    assert "locked" not in c("get", "/servers/detail", "2.8").json()["servers"][0]

    updated = c("put", f"/servers/{sid}", "2.8", {"server": {"name": "vm2"}}).json()["server"]
    assert set(updated) == BASIC_KEYS  # Nova's update answer has no extension attributes
    updated = c("put", f"/servers/{sid}", "2.9", {"server": {"name": "vm3"}}).json()["server"]
    assert set(updated) == BASIC_KEYS | {"locked"} and updated["locked"] is True and updated["name"] == "vm3"

    assert c("post", f"/servers/{sid}/action", "2.9", {"unlock": None}).status_code == 202
    rebuild = {"rebuild": {"imageRef": str(world.image.id)}}
    resp = c("post", f"/servers/{sid}/action", "2.8", rebuild)
    assert resp.status_code == 202 and set(resp.json()["server"]) == BASIC_KEYS
    resp = c("post", f"/servers/{sid}/action", "2.9", rebuild)
    assert resp.status_code == 202 and resp.json()["server"]["locked"] is False


# -- 2.10: key pairs of other users, for admins ----------------------------------------------------


def test_2_10_admins_manage_other_users_keypairs(world):
    admin, member = Api(world, world.admin), Api(world, world.member)
    other = world.member.pk.hex
    _, message = nova_error(admin("post", "/os-keypairs", "2.9", {"keypair": {"name": "k", "user_id": other}}), 400)
    assert "'user_id'" in message
    resp = admin("post", "/os-keypairs", "2.10", {"keypair": {"name": "for-alice", "user_id": other}})
    assert resp.status_code == 201 and resp.json()["keypair"]["user_id"] == other
    assert [k["keypair"]["name"] for k in member("get", "/os-keypairs", "2.10").json()["keypairs"]] == ["for-alice"]

    # Below 2.10 the user_id query parameter is ignored: the admin sees their own key pairs.
    assert admin("get", f"/os-keypairs?user_id={other}", "2.9").json()["keypairs"] == []
    nova_error(admin("get", f"/os-keypairs/for-alice?user_id={other}", "2.9"), 404)
    listed = admin("get", f"/os-keypairs?user_id={other}", "2.10").json()["keypairs"]
    assert [k["keypair"]["name"] for k in listed] == ["for-alice"]
    shown = admin("get", f"/os-keypairs/for-alice?user_id={other}", "2.10").json()["keypair"]
    assert shown["user_id"] == other and shown["type"] == "ssh"

    # Members may not act for others, in the body or the query.
    nova_error(member("post", "/os-keypairs", "2.10", {"keypair": {"name": "x", "user_id": world.admin.pk.hex}}), 403)
    nova_error(member("get", f"/os-keypairs?user_id={world.admin.pk.hex}", "2.10"), 403)
    _, message = nova_error(admin("post", "/os-keypairs", "2.10", {"keypair": {"name": "x", "user_id": "f" * 32}}),
                            400)
    assert "could not be found" in message

    assert admin("delete", f"/os-keypairs/for-alice?user_id={other}", "2.9").status_code == 404
    assert admin("delete", f"/os-keypairs/for-alice?user_id={other}", "2.10").status_code == 204
    assert member("get", "/os-keypairs", "2.10").json()["keypairs"] == []



# -- 2.11: forced_down of services -----------------------------------------------------------------


def test_2_11_services_show_and_take_forced_down(world):
    make_host("node1")
    admin, member = Api(world, world.admin), Api(world, world.member)
    assert "forced_down" not in admin("get", "/os-services", "2.10").json()["services"][0]
    (service,) = admin("get", "/os-services", "2.11").json()["services"]
    assert (service["forced_down"], service["state"]) == (False, "up")

    body = {"host": "node1", "binary": "nova-compute", "forced_down": True}
    nova_error(admin("put", "/os-services/force-down", "2.10", body), 404)
    nova_error(member("put", "/os-services/force-down", "2.11", body), 403)
    resp = admin("put", "/os-services/force-down", "2.11", body)
    assert resp.status_code == 200, resp.content
    assert resp.json() == {"service": {"host": "node1", "binary": "nova-compute", "forced_down": True}}
    (service,) = admin("get", "/os-services", "2.11").json()["services"]
    assert (service["forced_down"], service["state"]) == (True, "down")
    # A forced-down host takes no new server: the scheduler finds no valid host.
    sid = boot(member, world)
    server = member("get", f"/servers/{sid}", "2.11").json()["server"]
    assert server["status"] == "ERROR" and "No valid host" in server["fault"]["message"]

    _, message = nova_error(admin("put", "/os-services/force-down", "2.11", {**body, "forced_down": "maybe"}), 400)
    assert "forced_down" in message and "not a boolean" in message
    _, message = nova_error(admin("put", "/os-services/force-down", "2.11", {"host": "node1", "binary": "nova-compute"}),
                            400)
    assert "Missing forced_down field" in message
    _, message = nova_error(admin("put", "/os-services/force-down", "2.11", {**body, "zone": "x"}), 400)
    assert "Additional properties" in message
    nova_error(admin("put", "/os-services/force-down", "2.11", {**body, "host": "nope"}), 404)
    resp = admin("put", "/os-services/force-down", "2.11", {**body, "forced_down": "False"})
    assert resp.json()["service"]["forced_down"] is False
    assert admin("get", "/os-services", "2.11").json()["services"][0]["state"] == "up"


# -- 2.13: project_id and user_id of server groups ------------------------------------------------


def test_2_13_server_groups_show_their_project_and_user(world):
    c = Api(world, world.member)
    group = c("post", "/os-server-groups", "2.12", {"server_group": {"name": "g", "policies": ["affinity"]}}).json()
    assert set(group["server_group"]) == {"id", "name", "policies", "members", "metadata"}
    gid = group["server_group"]["id"]
    owners = {"project_id": world.project.pk.hex, "user_id": world.member.pk.hex}
    created = c("post", "/os-server-groups", "2.13", {"server_group": {"name": "h", "policies": ["affinity"]}})
    assert {k: created.json()["server_group"][k] for k in owners} == owners
    shown = c("get", f"/os-server-groups/{gid}", "2.13").json()["server_group"]
    assert set(shown) == {"id", "name", "policies", "members", "metadata", "project_id", "user_id"}
    assert {k: shown[k] for k in owners} == owners
    assert all(g["user_id"] == owners["user_id"] for g in c("get", "/os-server-groups", "2.13").json()["server_groups"])
    assert "user_id" not in c("get", f"/os-server-groups/{gid}", "2.12").json()["server_group"]


# -- 2.15: soft-affinity and soft-anti-affinity ----------------------------------------------------


@pytest.mark.parametrize("policy", ["soft-affinity", "soft-anti-affinity"])
def test_2_15_soft_policies(world, policy):
    c = Api(world, world.member)
    _, message = nova_error(c("post", "/os-server-groups", "2.14", {"server_group": {"name": "g", "policies": [policy]}}),
                            400)
    assert policy in message
    resp = c("post", "/os-server-groups", "2.15", {"server_group": {"name": "g", "policies": [policy]}})
    assert resp.status_code == 200 and resp.json()["server_group"]["policies"] == [policy]


# -- 2.16: host_status, for admins -----------------------------------------------------------------


def test_2_16_host_status_for_admins(world):
    from apps.hosts.models import Host

    make_host("node1")
    admin, member = Api(world, world.admin), Api(world, world.member)
    sid = boot(member, world)

    def status(server_id=sid, version="2.16"):
        shown = admin("get", f"/servers/{server_id}?all_tenants=1", version).json()["server"]
        listed = admin("get", "/servers/detail?all_tenants=1", version).json()["servers"]
        assert shown.get("host_status") == next(s for s in listed if s["id"] == server_id).get("host_status")
        return shown.get("host_status")

    assert status(version="2.15") is None
    assert "host_status" not in member("get", f"/servers/{sid}", "2.16").json()["server"]
    assert status() == "UP"
    Host.objects.filter(hostname="node1").update(status="disabled")
    assert status() == "MAINTENANCE"
    Host.objects.filter(hostname="node1").update(forced_down=True, state="down")
    assert status() == "DOWN"
    unplaced = boot(member, world, name="unplaced")  # no host is up: ERROR, on no host
    assert status(unplaced) == ""
    Host.objects.filter(hostname="node1").update(forced_down=False, status="enabled")
    assert status() == "UNKNOWN"  # down: its heartbeats stopped


# -- 2.17: trigger_crash_dump ----------------------------------------------------------------------


def test_2_17_trigger_crash_dump(world, fake_driver):
    make_host()
    c = Api(world, world.member)
    sid = boot(c, world)
    dump = {"trigger_crash_dump": None}
    nova_error(c("post", f"/servers/{sid}/action", "2.16", dump), 404)  # no such action before 2.17
    _, message = nova_error(c("post", f"/servers/{sid}/action", "2.17", {"trigger_crash_dump": {}}), 400)
    assert "null" in message
    resp = c("post", f"/servers/{sid}/action", "2.17", dump)
    assert resp.status_code == 202 and not resp.content
    assert ("trigger_crash_dump", sid) in fake_driver.calls
    server = c("get", f"/servers/{sid}", "2.17").json()["server"]
    assert (server["status"], server["OS-EXT-STS:task_state"]) == ("ACTIVE", None)  # no state of its own
    actions = c("get", f"/servers/{sid}/os-instance-actions", "2.17").json()["instanceActions"]
    assert actions[0]["action"] == "trigger_crash_dump"
    shown = c("get", f"/servers/{sid}/os-instance-actions/{actions[0]['request_id']}", "2.17").json()
    assert [(e["event"], e["result"]) for e in shown["instanceAction"]["events"]] == [
        ("compute_trigger_crash_dump", "Success")]

    # A guest that is not running: the host's error is the action's, and a fault.
    fake_driver.fail_next("trigger_crash_dump", "cannot inject an NMI: the instance is not running")
    assert c("post", f"/servers/{sid}/action", "2.17", dump).status_code == 202
    latest = c("get", f"/servers/{sid}/os-instance-actions", "2.17").json()["instanceActions"][0]
    shown = c("get", f"/servers/{sid}/os-instance-actions/{latest['request_id']}", "2.17").json()["instanceAction"]
    assert shown["events"][0]["result"] == "Error"
    from apps.instances.models import InstanceFault
    assert InstanceFault.objects.get(instance_id=sid).message == "cannot inject an NMI: the instance is not running"

    # Stopped: Nova's allow-list refuses (409); locked: 409 for its owner.
    assert c("post", f"/servers/{sid}/action", "2.17", {"os-stop": None}).status_code == 202
    _, message = nova_error(c("post", f"/servers/{sid}/action", "2.17", dump), 409)
    assert "trigger_crash_dump" in message and "stopped" in message
    assert c("post", f"/servers/{sid}/action", "2.17", {"os-start": None}).status_code == 202
    assert c("post", f"/servers/{sid}/action", "2.17", {"lock": None}).status_code == 202
    _, message = nova_error(c("post", f"/servers/{sid}/action", "2.17", dump), 409)
    assert "locked" in message
    outsider = Api(world, world.outsider, world.other_project)
    nova_error(outsider("post", f"/servers/{sid}/action", "2.17", dump), 404)


# -- 2.19: server description --------------------------------------------------------------------


def test_2_19_description_in_create_update_rebuild_and_show(world):
    make_host()
    c = Api(world, world.member)
    # Before 2.19 the description is the name, and a description is refused.
    _, message = nova_error(c("post", "/servers", "2.18", {"server": {
        "name": "old", "imageRef": str(world.image.id), "flavorRef": world.flavor.id, "description": "d"}}), 400)
    assert "'description'" in message
    old = boot(c, world, name="old", version="2.18")
    assert "description" not in c("get", f"/servers/{old}", "2.18").json()["server"]
    assert c("get", f"/servers/{old}", "2.19").json()["server"]["description"] == "old"

    # From 2.19: null unless given; shown, listed in detail, updated, cleared, rebuilt.
    plain = boot(c, world, name="plain", version="2.19")
    assert c("get", f"/servers/{plain}", "2.19").json()["server"]["description"] is None
    sid = boot(c, world, name="new", version="2.19", description="a web server")
    assert c("get", f"/servers/{sid}", "2.19").json()["server"]["description"] == "a web server"
    listed = {s["id"]: s["description"] for s in c("get", "/servers/detail", "2.19").json()["servers"]}
    assert listed == {old: "old", plain: None, sid: "a web server"}
    assert all("description" not in s for s in c("get", "/servers", "2.19").json()["servers"])

    nova_error(c("put", f"/servers/{sid}", "2.18", {"server": {"description": "x"}}), 400)
    updated = c("put", f"/servers/{sid}", "2.19", {"server": {"description": "the web server"}}).json()["server"]
    assert set(updated) == BASIC_KEYS | {"locked", "description"} and updated["description"] == "the web server"
    updated = c("put", f"/servers/{sid}", "2.19", {"server": {"name": "renamed"}}).json()["server"]
    assert updated["description"] == "the web server"  # only what is given changes
    cleared = c("put", f"/servers/{sid}", "2.19", {"server": {"description": None}}).json()["server"]
    assert cleared["description"] is None
    for bad in ("x" * 256, "tab\there", 5):
        nova_error(c("put", f"/servers/{sid}", "2.19", {"server": {"description": bad}}), 400)
    _, message = nova_error(c("put", f"/servers/{sid}", "2.19", {"server": {"name": "new\nline"}}), 400)
    assert "printable" in message  # names follow the same rule (Nova's)

    rebuild = {"rebuild": {"imageRef": str(world.image.id), "description": "rebuilt"}}
    nova_error(c("post", f"/servers/{sid}/action", "2.18", rebuild), 400)
    resp = c("post", f"/servers/{sid}/action", "2.19", rebuild)
    assert resp.status_code == 202 and resp.json()["server"]["description"] == "rebuilt"
    assert c("get", f"/servers/{sid}", "2.19").json()["server"]["description"] == "rebuilt"

    by_description = c("get", "/servers/detail?sort_key=display_description&sort_dir=asc", "2.19").json()["servers"]
    assert [s["id"] for s in by_description] == [plain, old, sid]  # null first ascending


# -- 2.21: actions of deleted servers ------------------------------------------------------------


def test_2_21_actions_of_a_deleted_server(world):
    make_host()
    c = Api(world, world.member)
    sid = boot(c, world)
    assert c("delete", f"/servers/{sid}", "2.21").status_code == 204
    nova_error(c("get", f"/servers/{sid}", "2.21"), 404)
    nova_error(c("get", f"/servers/{sid}/os-instance-actions", "2.20"), 404)
    actions = c("get", f"/servers/{sid}/os-instance-actions", "2.21").json()["instanceActions"]
    assert [a["action"] for a in actions] == ["delete", "create"]
    shown = c("get", f"/servers/{sid}/os-instance-actions/{actions[0]['request_id']}", "2.21")
    assert shown.status_code == 200 and shown.json()["instanceAction"]["action"] == "delete"
    # Still the project's: another project's user sees nothing.
    outsider = Api(world, world.outsider, world.other_project)
    nova_error(outsider("get", f"/servers/{sid}/os-instance-actions", "2.21"), 404)


# -- 2.26: server tags ---------------------------------------------------------------------------


def test_2_26_server_tags(world, fake_driver):
    make_host()
    c = Api(world, world.member)
    sid = boot(c, world)
    other = boot(c, world, name="vm2")
    assert {s["status"] for s in c("get", "/servers/detail", "2.26").json()["servers"]} == {"ACTIVE"}

    nova_error(c("get", f"/servers/{sid}/tags", "2.25"), 404)
    nova_error(c("put", f"/servers/{sid}/tags/red", "2.25"), 404)
    assert "tags" not in c("get", f"/servers/{sid}", "2.25").json()["server"]
    assert c("get", f"/servers/{sid}", "2.26").json()["server"]["tags"] == []

    added = c("put", f"/servers/{sid}/tags/red", "2.26")
    assert added.status_code == 201 and added["Location"].endswith(f"/compute/v2.1/servers/{sid}/tags/red")
    assert c("put", f"/servers/{sid}/tags/red", "2.26").status_code == 204  # already there
    assert c("get", f"/servers/{sid}/tags/red", "2.26").status_code == 204
    _, message = nova_error(c("get", f"/servers/{sid}/tags/blue", "2.26"), 404)
    assert "has no tag 'blue'" in message
    replaced = c("put", f"/servers/{sid}/tags", "2.26", {"tags": ["zeta", "blue", "red", "blue"]})
    assert replaced.status_code == 200 and replaced.json() == {"tags": ["blue", "red", "zeta"]}
    assert c("get", f"/servers/{sid}/tags", "2.26").json() == {"tags": ["blue", "red", "zeta"]}
    assert c("put", f"/servers/{other}/tags", "2.26", {"tags": ["red"]}).status_code == 200

    # In show, list detail and the update answer; not in the plain list.
    assert c("get", f"/servers/{sid}", "2.26").json()["server"]["tags"] == ["blue", "red", "zeta"]
    detail = {s["id"]: s for s in c("get", "/servers/detail", "2.26").json()["servers"]}
    assert detail[sid]["tags"] == ["blue", "red", "zeta"] and detail[other]["tags"] == ["red"]
    assert "tags" not in c("get", "/servers/detail", "2.25").json()["servers"][0]
    renamed = c("put", f"/servers/{sid}", "2.26", {"server": {"name": "vm1b"}}).json()["server"]
    assert renamed["tags"] == ["blue", "red", "zeta"] and set(renamed) == BASIC_KEYS | {"locked", "description", "tags"}

    # Nova's four filters, with comma-separated tags; ignored before 2.26.
    def listed(query, version="2.26"):
        return {s["id"] for s in c("get", f"/servers?{query}", version).json()["servers"]}

    assert listed("tags=red") == {sid, other}
    assert listed("tags=red,blue") == {sid}
    assert listed("tags-any=zeta,nothing") == {sid}
    assert listed("not-tags=red,blue") == {other}
    assert listed("not-tags-any=blue,nothing") == {other}
    assert listed("tags=nothing") == set()
    assert listed("tags=nothing", "2.25") == {sid, other}

    # Bad input: 400 with Nova's messages; 50 tags at most.
    for bad in ("a,b", "x" * 61):
        _, message = nova_error(c("put", f"/servers/{sid}/tags/{bad}", "2.26"), 400)
        assert "is invalid" in message
    nova_error(c("put", f"/servers/{sid}/tags", "2.26", {"tags": ["ok", "no/slash"]}), 400)
    nova_error(c("put", f"/servers/{sid}/tags", "2.26", {"tags": "red"}), 400)
    nova_error(c("put", f"/servers/{sid}/tags", "2.26", {}), 400)
    nova_error(c("put", f"/servers/{sid}/tags", "2.26", {"tags": [], "extra": 1}), 400)
    _, message = nova_error(c("put", f"/servers/{sid}/tags", "2.26", {"tags": [f"t{i}" for i in range(51)]}), 400)
    assert "per-server limit 50" in message
    assert c("put", f"/servers/{sid}/tags", "2.26", {"tags": [f"t{i}" for i in range(50)]}).status_code == 200
    _, message = nova_error(c("put", f"/servers/{sid}/tags/one-more", "2.26"), 400)
    assert "per-server limit 50" in message
    assert len(c("get", f"/servers/{sid}/tags", "2.26").json()["tags"]) == 50

    # Delete one, then all.
    assert c("delete", f"/servers/{sid}/tags/t7", "2.26").status_code == 204
    nova_error(c("delete", f"/servers/{sid}/tags/t7", "2.26"), 404)
    assert c("delete", f"/servers/{sid}/tags", "2.26").status_code == 204
    assert c("get", f"/servers/{sid}/tags", "2.26").json() == {"tags": []}

    # Policy: a reader reads but may not change; another project sees no server.
    reader = Api(world, world.reader)
    assert reader("get", f"/servers/{other}/tags", "2.26").json() == {"tags": ["red"]}
    nova_error(reader("put", f"/servers/{other}/tags/blue", "2.26"), 403)
    nova_error(reader("delete", f"/servers/{other}/tags", "2.26"), 403)
    outsider = Api(world, world.outsider, world.other_project)
    nova_error(outsider("get", f"/servers/{other}/tags", "2.26"), 404)
    nova_error(outsider("put", f"/servers/{other}/tags/blue", "2.26"), 404)
    assert listed("tags=red") == {other}


def test_2_26_tags_change_only_in_stable_states(world):
    make_host()
    c = Api(world, world.member)
    sid = boot(c, world)
    Instance.objects.filter(pk=sid).update(vm_state=VmState.ERROR)
    _, message = nova_error(c("put", f"/servers/{sid}/tags/red", "2.26"), 409)
    assert "while it is in vm_state error" in message
    nova_error(c("put", f"/servers/{sid}/tags", "2.26", {"tags": ["red"]}), 409)
    nova_error(c("delete", f"/servers/{sid}/tags", "2.26"), 409)
    assert c("get", f"/servers/{sid}/tags", "2.26").json() == {"tags": []}  # reading works in any state
    Instance.objects.filter(pk=sid).update(vm_state=VmState.STOPPED)
    before = c("get", f"/servers/{sid}", "2.26").json()["server"]["updated"]
    assert c("put", f"/servers/{sid}/tags/red", "2.26").status_code == 201
    after = c("get", f"/servers/{sid}", "2.26").json()["server"]
    assert after["tags"] == ["red"] and after["updated"] >= before
