"""The metadata service's control-plane side: signatures first, then the port, then the answer."""

import base64
import json
import time
import uuid

import pytest

from agents.network.metadata_signing import HEADER_ADDRESS, HEADER_SIGNATURE, load_secret, signed_headers
from apps.instances.models import Instance, Keypair
from apps.networks import services
from apps.networks.metadata import config_drive_files, config_drive_for
from apps.networks.models import FloatingIP
from apps.networks.states import OWNER_COMPUTE

USER_DATA = b"#!/bin/sh\necho hello from user data\n"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmetadatatestkeymetadatatestkeymetadata test@cloudmgr"


@pytest.fixture
def secret(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("CLOUDMGR_METADATA_SECRET", raising=False)
    settings.DATA_DIR = tmp_path
    return load_secret(tmp_path)


def _instance(world, name: str, **fields) -> Instance:
    return Instance.objects.create(
        project=world.project, user=world.member, name=name, flavor=world.flavor, vcpus=1, memory_mib=128,
        root_gb=1, image=world.image, hostname=name.lower(), reservation_id="r-abcdefgh", **fields,
    )


@pytest.fixture
def guest(world, secret):
    """An instance with a port at 10.0.0.5 on a DHCP network, a key pair and user data."""
    Keypair.objects.create(user=world.member, name="mykey", public_key=PUBLIC_KEY, fingerprint="aa:bb")
    network = services.network_create(user=world.member, project=world.project, name="private")
    subnet = services.subnet_create(user=world.member, project=world.project, network=network, cidr="10.0.0.0/24",
                                    dns_nameservers=["10.0.0.53"])
    instance = _instance(world, "Web-1", key_name="mykey", user_data=base64.b64encode(USER_DATA).decode(),
                         metadata={"role": "web"})
    port = services.port_create(user=world.member, project=world.project, network=network,
                                device_id=str(instance.pk), device_owner=OWNER_COMPUTE,
                                fixed_ips=[{"subnet_id": str(subnet.pk), "ip_address": "10.0.0.5"}])
    return {"instance": instance, "network": network, "subnet": subnet, "port": port}


def fetch(client, secret, network_id, address, path, **headers):
    signed = signed_headers(secret, str(network_id), address) if secret else {}
    signed.update(headers)
    return client.get(f"/metadata{path}", headers=signed)


# ------------------------------------------------------------------------------------- signatures


def test_unsigned_or_forged_requests_are_refused_before_anything_is_looked_up(client, guest, secret):
    network_id = guest["network"].pk
    assert fetch(client, None, network_id, "10.0.0.5", "/openstack/latest/meta_data.json").status_code == 403
    assert fetch(client, b"not the secret", network_id, "10.0.0.5", "/openstack/latest/meta_data.json").status_code == 403
    # A guest copying a valid signature but naming another address:
    response = fetch(client, secret, network_id, "10.0.0.6", "/openstack/latest/meta_data.json",
                     **{HEADER_ADDRESS: "10.0.0.5"})
    assert response.status_code == 403
    stale = signed_headers(secret, str(network_id), "10.0.0.5", now=time.time() - 3600)
    assert client.get("/metadata/openstack/latest/meta_data.json", headers=stale).status_code == 403
    bad = signed_headers(secret, str(network_id), "10.0.0.5")
    bad[HEADER_SIGNATURE] = "0" * 64
    response = client.get("/metadata/openstack/latest/meta_data.json", headers=bad)
    assert response.status_code == 403
    assert b"web" not in response.content


def test_only_get_and_head(client, guest, secret):
    headers = signed_headers(secret, str(guest["network"].pk), "10.0.0.5")
    assert client.post("/metadata/openstack/latest/meta_data.json", headers=headers).status_code == 405
    assert client.head("/metadata/openstack/latest/meta_data.json", headers=headers).status_code == 200


def test_unknown_ports_are_404(client, guest, secret, world):
    network_id = guest["network"].pk
    assert fetch(client, secret, network_id, "10.0.0.99", "/openstack/latest/meta_data.json").status_code == 404
    assert fetch(client, secret, uuid.uuid4(), "10.0.0.5", "/openstack/latest/meta_data.json").status_code == 404
    assert fetch(client, secret, "not-a-network", "not-an-ip", "/latest/meta-data/").status_code == 404
    # The DHCP port holds an address too, but no instance is behind it.
    dhcp = guest["network"].ports.get(device_owner="network:dhcp").fixed_ips.get().ip_address
    assert fetch(client, secret, network_id, dhcp, "/openstack/latest/meta_data.json").status_code == 404
    guest["instance"].deleted_at = guest["instance"].created_at
    guest["instance"].save()
    assert fetch(client, secret, network_id, "10.0.0.5", "/openstack/latest/meta_data.json").status_code == 404


def test_the_secret_file_is_made_once_and_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("CLOUDMGR_METADATA_SECRET", raising=False)
    first = load_secret(tmp_path)
    assert len(first) == 64 and load_secret(tmp_path) == first
    assert (tmp_path / "metadata_secret").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("CLOUDMGR_METADATA_SECRET", "from-the-environment")
    assert load_secret(tmp_path) == b"from-the-environment"


# ------------------------------------------------------------------------------------ the documents


def test_meta_data_json(client, guest, secret, world):
    response = fetch(client, secret, guest["network"].pk, "10.0.0.5", "/openstack/latest/meta_data.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    instance = guest["instance"]
    assert body["uuid"] == str(instance.pk)
    assert body["name"] == "Web-1" and body["hostname"] == "web-1"
    assert body["project_id"] == world.project.pk.hex
    assert body["meta"] == {"role": "web"}
    assert body["public_keys"] == {"mykey": PUBLIC_KEY}
    assert body["keys"] == [{"name": "mykey", "type": "ssh", "data": PUBLIC_KEY}]
    assert body["availability_zone"] == "nova" and body["launch_index"] == 0
    assert len(base64.b64decode(body["random_seed"])) == 512


def test_the_network_and_the_address_choose_the_instance(client, guest, secret, world):
    """Another project's network with the same CIDR and address is another instance."""
    network = services.network_create(user=world.outsider, project=world.other_project, name="theirs")
    subnet = services.subnet_create(user=world.outsider, project=world.other_project, network=network,
                                    cidr="10.0.0.0/24")
    other = Instance.objects.create(project=world.other_project, user=world.outsider, name="other",
                                    flavor=world.flavor, vcpus=1, memory_mib=128, root_gb=1, image=world.image)
    services.port_create(user=world.outsider, project=world.other_project, network=network,
                         device_id=str(other.pk), device_owner=OWNER_COMPUTE,
                         fixed_ips=[{"subnet_id": str(subnet.pk), "ip_address": "10.0.0.5"}])
    mine = fetch(client, secret, guest["network"].pk, "10.0.0.5", "/openstack/latest/meta_data.json")
    theirs = fetch(client, secret, network.pk, "10.0.0.5", "/openstack/latest/meta_data.json")
    assert json.loads(mine.content)["uuid"] == str(guest["instance"].pk)
    assert json.loads(theirs.content)["uuid"] == str(other.pk)
    assert fetch(client, secret, network.pk, "10.0.0.5", "/openstack/latest/user_data").status_code == 404


def test_user_data_and_listings(client, guest, secret):
    network_id = guest["network"].pk
    response = fetch(client, secret, network_id, "10.0.0.5", "/openstack/latest/user_data")
    assert response.status_code == 200 and response.content == USER_DATA
    assert fetch(client, secret, network_id, "10.0.0.5", "/latest/user-data").content == USER_DATA
    listing = fetch(client, secret, network_id, "10.0.0.5", "/openstack/latest/").content.decode().split("\n")
    assert set(listing) == {"meta_data.json", "network_data.json", "vendor_data.json", "vendor_data2.json",
                            "user_data"}
    versions = fetch(client, secret, network_id, "10.0.0.5", "/openstack").content.decode().split("\n")
    assert versions[0] == "2012-08-10" and versions[-1] == "latest"
    assert fetch(client, secret, network_id, "10.0.0.5", "/openstack/2013-04-04/user_data").content == USER_DATA
    assert fetch(client, secret, network_id, "10.0.0.5", "/openstack/1999-01-01/").status_code == 404
    assert fetch(client, secret, network_id, "10.0.0.5", "/").content.decode().split("\n")[-1] == "latest"
    assert json.loads(fetch(client, secret, network_id, "10.0.0.5", "/openstack/latest/vendor_data.json").content) == {}


def test_network_data_json(client, guest, secret):
    body = json.loads(fetch(client, secret, guest["network"].pk, "10.0.0.5",
                            "/openstack/latest/network_data.json").content)
    port = guest["port"]
    assert body["links"] == [{"id": "tap" + port.pk.hex[:11], "vif_id": str(port.pk), "type": "bridge",
                              "mtu": guest["network"].mtu, "ethernet_mac_address": port.mac_address}]
    assert body["networks"] == [{"id": "network0", "link": "tap" + port.pk.hex[:11], "type": "ipv4_dhcp",
                                 "network_id": str(guest["network"].pk)}]
    assert body["services"] == [{"type": "dns", "address": "10.0.0.53"}]


def test_network_data_of_a_subnet_without_dhcp_is_static(client, world, secret):
    network = services.network_create(user=world.member, project=world.project, name="static")
    subnet = services.subnet_create(user=world.member, project=world.project, network=network, cidr="10.9.0.0/24",
                                    enable_dhcp=False, host_routes=[{"destination": "10.99.0.0/16",
                                                                     "nexthop": "10.9.0.254"}])
    instance = _instance(world, "static")
    services.port_create(user=world.member, project=world.project, network=network, device_id=str(instance.pk),
                         device_owner=OWNER_COMPUTE, fixed_ips=[{"subnet_id": str(subnet.pk), "ip_address": "10.9.0.7"}])
    body = json.loads(fetch(client, secret, network.pk, "10.9.0.7", "/openstack/latest/network_data.json").content)
    entry = body["networks"][0]
    assert entry["type"] == "ipv4" and entry["ip_address"] == "10.9.0.7" and entry["netmask"] == "255.255.255.0"
    assert entry["routes"] == [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.9.0.1"},
                               {"network": "10.99.0.0", "netmask": "255.255.0.0", "gateway": "10.9.0.254"}]


def test_ec2_meta_data(client, guest, secret, world):
    network_id = guest["network"].pk
    instance = guest["instance"]

    def get(path):
        response = fetch(client, secret, network_id, "10.0.0.5", f"/latest/meta-data/{path}")
        assert response.status_code == 200, path
        return response.content.decode()

    listing = get("").split("\n")
    assert {"instance-id", "local-ipv4", "placement/", "public-keys/", "hostname", "security-groups"} <= set(listing)
    assert get("instance-id") == f"i-{instance.pk.hex[:8]}"
    assert get("local-ipv4") == "10.0.0.5"
    assert get("public-ipv4") == ""
    assert get("placement/availability-zone") == "nova"
    assert get("public-keys/") == "0=mykey"
    assert get("public-keys/0/") == "openssh-key"
    assert get("public-keys/0/openssh-key") == PUBLIC_KEY
    assert get("instance-type") == world.flavor.name
    assert get("reservation-id") == "r-abcdefgh"
    assert get("security-groups") == "default"
    assert get("block-device-mapping/") == "ami\nroot"
    assert get("block-device-mapping/root") == "/dev/vda"
    # The flavor's disks follow the root disk: cloud-init mounts ephemeral0 and turns on the swap.
    Instance.objects.filter(pk=instance.pk).update(ephemeral_gb=1, swap_mb=256)
    assert get("block-device-mapping/") == "ami\nroot\nephemeral0\nswap"
    assert (get("block-device-mapping/ephemeral0"), get("block-device-mapping/swap")) == ("/dev/vdb", "/dev/vdc")
    Instance.objects.filter(pk=instance.pk).update(ephemeral_gb=0)
    assert get("block-device-mapping/swap") == "/dev/vdb"
    assert fetch(client, secret, network_id, "10.0.0.5", "/latest/meta-data/nothing").status_code == 404
    assert fetch(client, secret, network_id, "10.0.0.5", "/2009-04-04/meta-data/hostname").content == b"web-1"
    assert fetch(client, secret, network_id, "10.0.0.5", "/latest/").content == b"meta-data/\nuser-data"


def test_public_ipv4_is_the_floating_ip_of_the_asking_address(client, guest, secret, world):
    public = services.network_create(user=world.admin, project=world.project, name="public", external=True)
    public_subnet = services.subnet_create(user=world.admin, project=world.project, network=public,
                                           cidr="172.24.4.0/24")
    port = services.port_create(user=world.admin, project=world.project, network=public,
                                device_owner="network:floatingip",
                                fixed_ips=[{"subnet_id": str(public_subnet.pk), "ip_address": "172.24.4.50"}])
    FloatingIP.objects.create(project=world.project, floating_network=public, floating_port=port,
                              floating_ip_address="172.24.4.50", port=guest["port"], fixed_ip_address="10.0.0.5")
    response = fetch(client, secret, guest["network"].pk, "10.0.0.5", "/latest/meta-data/public-ipv4")
    assert response.content == b"172.24.4.50"


def test_config_drive_files_are_the_same_documents(guest):
    files = {path: base64.b64decode(body) for path, body in config_drive_files(instance=guest["instance"]).items()}
    assert set(files) == {
        "openstack/latest/meta_data.json", "openstack/latest/network_data.json", "openstack/latest/vendor_data.json",
        "openstack/latest/vendor_data2.json", "openstack/latest/user_data", "ec2/latest/meta-data.json",
        "ec2/latest/user-data",
    }
    assert json.loads(files["openstack/latest/meta_data.json"])["uuid"] == str(guest["instance"].pk)
    assert files["openstack/latest/user_data"] == USER_DATA
    assert json.loads(files["ec2/latest/meta-data.json"])["local-ipv4"] == "10.0.0.5"
    assert json.loads(files["openstack/latest/network_data.json"])["links"][0]["ethernet_mac_address"] == \
        guest["port"].mac_address


def test_config_drive_for_networks_without_metadata_or_when_forced(guest, world, settings):
    settings.CLOUDMGR_FORCE_CONFIG_DRIVE = False
    assert config_drive_for(instance=guest["instance"]) is None, "its network serves metadata"
    network = services.network_create(user=world.member, project=world.project, name="no-dhcp")
    subnet = services.subnet_create(user=world.member, project=world.project, network=network, cidr="10.8.0.0/24",
                                    enable_dhcp=False)
    services.port_create(user=world.member, project=world.project, network=network,
                         device_id=str(guest["instance"].pk), device_owner=OWNER_COMPUTE,
                         fixed_ips=[{"subnet_id": str(subnet.pk)}])
    files = config_drive_for(instance=guest["instance"])
    assert files is not None
    networks = json.loads(base64.b64decode(files["openstack/latest/network_data.json"]))["networks"]
    assert [n["type"] for n in networks] == ["ipv4_dhcp", "ipv4"], "the static address is written out"

    other = _instance(world, "forced")
    assert config_drive_for(instance=other) is None
    settings.CLOUDMGR_FORCE_CONFIG_DRIVE = True
    assert "openstack/latest/meta_data.json" in config_drive_for(instance=other)


@pytest.mark.django_db(transaction=True)
def test_the_spawn_spec_carries_the_config_drive(world, fake_driver, settings, secret):
    from apps.instances.services import instance_create
    from tests.unit.conftest import make_host

    settings.CLOUDMGR_FORCE_CONFIG_DRIVE = True
    make_host()
    instance = instance_create(user=world.member, project=world.project, name="cd", flavor=world.flavor,
                               image=world.image, user_data=base64.b64encode(USER_DATA).decode())
    files = fake_driver.specs[str(instance.pk)].config_drive
    assert json.loads(base64.b64decode(files["openstack/latest/meta_data.json"]))["uuid"] == str(instance.pk)
    assert base64.b64decode(files["openstack/latest/user_data"]) == USER_DATA
