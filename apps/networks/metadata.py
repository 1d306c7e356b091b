"""The metadata service's control-plane side: what a guest reads at 169.254.169.254 (through the
agent's proxy, ``agents/network/metadata.py``) and on its config drive.

Who is asking comes only from the proxy's signed headers: the network the request came in by and
the source address of its connection, signed with the secret shared with the agents. A request
without a valid, fresh signature is refused (403) before anything is looked up, so a guest that
reaches this endpoint directly, or forges the headers, learns nothing. The port holding that
address on that network, then the instance it belongs to, decide the answer (404 when there is
none).

Paths, as Nova's metadata API answers them:

* ``/openstack`` (versions), ``/openstack/<version>/`` (files), ``.../meta_data.json``,
  ``network_data.json``, ``vendor_data.json``, ``vendor_data2.json``, ``user_data``;
* ``/`` (EC2 versions), ``/<version>/`` , ``/<version>/meta-data/...``, ``/<version>/user-data``.

Every version listed answers the same documents as ``latest``. The URL patterns at the end are
included under ``/metadata/`` (``cloudmgr/urls.py``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import re_path
from django.views.decorators.http import require_safe

from agents import names
from agents.network.metadata_signing import MetadataError, load_secret, verify
from apps.instances.models import Instance, Keypair
from apps.networks.models import Port
from apps.networks.selectors import port_find_by_address, server_on_network_without_metadata, server_ports
from apps.networks.states import Ipv6Mode
from cloudmgr.exceptions import NotFound
from cloudmgr.models import filter_pk

logger = logging.getLogger(__name__)

EC2_VERSIONS = ("1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15", "2008-02-01",
                "2008-09-01", "2009-04-04")
OPENSTACK_VERSIONS = ("2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30", "2016-10-06",
                      "2017-02-22", "2018-08-27", "2020-10-14")
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
RANDOM_SEED_BYTES = 512


@dataclass(frozen=True)
class MetadataAnswer:
    body: bytes
    content_type: str = TEXT


# ------------------------------------------------------------------------------------ the documents


def _user_data(instance: Instance) -> bytes | None:
    """The user data as the guest gets it: the bytes whose base64 the API was given."""
    if not instance.user_data:
        return None
    try:
        return base64.b64decode(instance.user_data)
    except (binascii.Error, ValueError):
        return instance.user_data.encode()  # stored before validation existed: give it as it is


def _keypair(instance: Instance) -> Keypair | None:
    if not instance.key_name:
        return None
    return Keypair.objects.filter(user_id=instance.user_id, name=instance.key_name).first()


def meta_data(instance: Instance) -> dict[str, Any]:
    """``openstack/<version>/meta_data.json``."""
    keypair = _keypair(instance)
    document = {
        "uuid": str(instance.pk),
        "name": instance.name,
        "hostname": instance.hostname or instance.name,
        "launch_index": instance.launch_index,
        "availability_zone": instance.availability_zone,
        "project_id": instance.project_id.hex,
        "meta": {str(k): str(v) for k, v in (instance.metadata or {}).items()},
        "devices": [],
        "random_seed": base64.b64encode(os.urandom(RANDOM_SEED_BYTES)).decode(),
    }
    if keypair is not None:
        document["public_keys"] = {keypair.name: keypair.public_key}
        document["keys"] = [{"name": keypair.name, "type": keypair.type, "data": keypair.public_key}]
    return document


def _netmask(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return str(network.netmask)


def _route(destination: str, nexthop: str) -> dict[str, str]:
    network = ipaddress.ip_network(destination, strict=False)
    return {"network": str(network.network_address), "netmask": _netmask(network), "gateway": nexthop}


def _network_entry(number: int, link: str, port: Port, allocation) -> dict[str, Any]:
    """One address of a port in network_data.json: DHCP/SLAAC types say "ask the network", a
    subnet without DHCP gets its address, routes and DNS servers written out (as Nova does)."""
    subnet = allocation.subnet
    entry: dict[str, Any] = {"id": f"network{number}", "link": link, "network_id": str(port.network_id)}
    if subnet.ip_version == 4 and subnet.enable_dhcp:
        return {**entry, "type": "ipv4_dhcp"}
    if subnet.ip_version == 6 and subnet.ipv6_address_mode in (
            Ipv6Mode.SLAAC, Ipv6Mode.DHCPV6_STATEFUL, Ipv6Mode.DHCPV6_STATELESS):
        return {**entry, "type": f"ipv6_{subnet.ipv6_address_mode}"}
    cidr = ipaddress.ip_network(subnet.cidr, strict=False)
    routes = []
    if subnet.gateway_ip:
        routes.append(_route("0.0.0.0/0" if cidr.version == 4 else "::/0", subnet.gateway_ip))
    routes += [_route(r["destination"], r["nexthop"]) for r in subnet.host_routes or []]
    return {
        **entry, "type": f"ipv{cidr.version}", "ip_address": allocation.ip_address, "netmask": _netmask(cidr),
        "routes": routes, "services": [{"type": "dns", "address": a} for a in subnet.dns_nameservers or []],
    }


def network_data(instance: Instance) -> dict[str, Any]:
    """``openstack/<version>/network_data.json``: links (NICs), networks (addresses), services."""
    links, networks, dns = [], [], []
    for port in server_ports(device_ids=[str(instance.pk)]).get(str(instance.pk), []):
        link = names.tap_name(str(port.pk))
        links.append({"id": link, "vif_id": str(port.pk), "type": "bridge", "mtu": port.network.mtu,
                      "ethernet_mac_address": port.mac_address})
        for allocation in port.fixed_ips.all():
            networks.append(_network_entry(len(networks), link, port, allocation))
            dns += [a for a in allocation.subnet.dns_nameservers or [] if a not in dns]
    return {"links": links, "networks": networks, "services": [{"type": "dns", "address": a} for a in dns]}


def _block_device_mapping(instance: Instance) -> dict[str, str]:
    """The root disk, then the flavor's ephemeral and swap disks on the next virtio names (as the
    agent names them; cloud-init mounts ephemeral0 and enables the swap from this)."""
    mapping = {"ami": "vda", "root": "/dev/vda"}
    flavor_disks = [name for name, size in (("ephemeral0", instance.ephemeral_gb), ("swap", instance.swap_mb)) if size]
    for letter, name in zip("bc", flavor_disks):
        mapping[name] = f"/dev/vd{letter}"
    return mapping


def ec2_meta_data(instance: Instance, address: str | None = None) -> dict[str, Any]:
    """The tree under ``<version>/meta-data/``; ``address`` is the asking port's (else the first)."""
    ports = server_ports(device_ids=[str(instance.pk)]).get(str(instance.pk), [])
    fixed = [a.ip_address for p in ports for a in p.fixed_ips.all() if ipaddress.ip_address(a.ip_address).version == 4]
    local = address if address and ipaddress.ip_address(address).version == 4 else (fixed[0] if fixed else "")
    public = next((f.floating_ip_address for p in ports for f in p.floating_ips.all() if f.fixed_ip_address == local),
                  "")
    groups = sorted({g.name for p in ports for g in p.security_groups.all()})
    hostname = instance.hostname or instance.name
    tree: dict[str, Any] = {
        "ami-id": f"ami-{instance.image_id.hex[:8]}" if instance.image_id else "",
        "ami-launch-index": str(instance.launch_index),
        "block-device-mapping": _block_device_mapping(instance),
        "hostname": hostname,
        "instance-action": "none",
        "instance-id": f"i-{instance.pk.hex[:8]}",
        "instance-type": instance.flavor.name,
        "local-hostname": hostname,
        "local-ipv4": local,
        "placement": {"availability-zone": instance.availability_zone},
        "public-hostname": hostname,
        "public-ipv4": public,
        "reservation-id": instance.reservation_id,
        "security-groups": "\n".join(groups),
    }
    keypair = _keypair(instance)
    if keypair is not None:
        tree["public-keys"] = {f"0={keypair.name}": {"openssh-key": keypair.public_key}}
    return tree


def _openstack_files(instance: Instance) -> dict[str, MetadataAnswer]:
    files = {
        "meta_data.json": MetadataAnswer(json.dumps(meta_data(instance)).encode(), JSON),
        "network_data.json": MetadataAnswer(json.dumps(network_data(instance)).encode(), JSON),
        "vendor_data.json": MetadataAnswer(b"{}", JSON),
        "vendor_data2.json": MetadataAnswer(b"{}", JSON),
    }
    user_data = _user_data(instance)
    if user_data is not None:
        files["user_data"] = MetadataAnswer(user_data, "application/octet-stream")
    return files


def config_drive_files(*, instance: Instance) -> dict[str, str]:
    """The config drive's files (path -> base64 content), laid out as Nova's ``config-2`` drive:
    ``openstack/latest/...`` and ``ec2/latest/meta-data.json`` (+ ``user-data``)."""
    files = {f"openstack/latest/{name}": answer.body for name, answer in _openstack_files(instance).items()}
    files["ec2/latest/meta-data.json"] = json.dumps(ec2_meta_data(instance)).encode()
    user_data = _user_data(instance)
    if user_data is not None:
        files["ec2/latest/user-data"] = user_data
    return {path: base64.b64encode(body).decode() for path, body in files.items()}


def config_drive_for(*, instance: Instance) -> dict[str, str] | None:
    """The config drive of an instance's domain spec, or None: an instance gets one when its
    create asked for it (Nova's ``config_drive``), with CLOUDMGR_FORCE_CONFIG_DRIVE, or when it
    has a port on a network without a metadata service."""
    if instance.config_drive or settings.CLOUDMGR_FORCE_CONFIG_DRIVE:
        return config_drive_files(instance=instance)
    if server_on_network_without_metadata(device_id=str(instance.pk)):
        return config_drive_files(instance=instance)
    return None


# ------------------------------------------------------------------------------ answering a request


def _instance_at(*, network_id: str, address: str) -> Instance:
    """The live instance whose port holds ``address`` on the network."""
    port = port_find_by_address(network_id=network_id, ip_address=address)
    if port is None or not port.device_owner.startswith("compute:") or not port.device_id:
        raise NotFound(f"No instance has address {address} on network {network_id}.")
    live = Instance.objects.filter(deleted_at__isnull=True).select_related("flavor")
    instance = filter_pk(live, port.device_id).first()
    if instance is None:
        raise NotFound(f"No instance has address {address} on network {network_id}.")
    return instance


def _listing(items) -> MetadataAnswer:
    return MetadataAnswer("\n".join(items).encode())


def _walk(tree: dict[str, Any], segments: list[str]) -> MetadataAnswer:
    """A node of the EC2 tree: a directory lists its entries (sub-directories with "/"), a leaf
    is its text. ``public-keys/0`` also finds the entry listed as ``0=<name>``."""
    node: Any = tree
    for segment in segments:
        if not isinstance(node, dict):
            raise NotFound("No such metadata.")
        key = segment if segment in node else next((k for k in node if k.split("=", 1)[0] == segment), None)
        if key is None:
            raise NotFound("No such metadata.")
        node = node[key]
    if isinstance(node, dict):
        return _listing(k if "=" in k else (f"{k}/" if isinstance(node[k], dict) else k) for k in node)
    return MetadataAnswer(str(node).encode())


def metadata_answer(*, network_id: str, address: str, path: str) -> MetadataAnswer:
    """What the guest at ``address`` on ``network_id`` gets at ``path`` (404: NotFound)."""
    segments = [s for s in path.split("/") if s]
    if not segments:
        return _listing([*EC2_VERSIONS, "latest"])
    instance = _instance_at(network_id=network_id, address=address)
    head, rest = segments[0], segments[1:]
    if head == "openstack":
        if not rest:
            return _listing([*OPENSTACK_VERSIONS, "latest"])
        if rest[0] not in (*OPENSTACK_VERSIONS, "latest"):
            raise NotFound(f"No metadata version {rest[0]}.")
        files = _openstack_files(instance)
        if len(rest) == 1:
            return _listing(files)
        if len(rest) == 2 and rest[1] in files:
            return files[rest[1]]
        raise NotFound("No such metadata.")
    if head not in (*EC2_VERSIONS, "latest"):
        raise NotFound(f"No metadata version {head}.")
    user_data = _user_data(instance)
    if not rest:
        return _listing(["meta-data/"] + (["user-data"] if user_data is not None else []))
    if rest == ["user-data"]:
        if user_data is None:
            raise NotFound("This instance has no user data.")
        return MetadataAnswer(user_data, "application/octet-stream")
    if rest[0] == "meta-data":
        return _walk(ec2_meta_data(instance, address), rest[1:])
    raise NotFound("No such metadata.")


# ----------------------------------------------------------------------------------- the front door


@require_safe
def metadata_view(request: HttpRequest, path: str = "") -> HttpResponse:
    """A guest's request, relayed by its network's metadata proxy."""
    try:
        secret = load_secret(settings.DATA_DIR)
    except MetadataError as exc:
        logger.error("metadata: %s", exc)
        return HttpResponse("The metadata service is not configured.\n", status=503, content_type=TEXT)
    identity = verify(secret, request.headers)
    if identity is None:
        logger.warning("metadata: refused a request without a valid signature from %s", request.META.get("REMOTE_ADDR"))
        return HttpResponse("Forbidden: the request is not signed by a metadata proxy.\n", status=403,
                            content_type=TEXT)
    network_id, address = identity
    try:
        answer = metadata_answer(network_id=network_id, address=address, path=path)
    except NotFound as exc:
        return HttpResponse(f"{exc.message}\n", status=404, content_type=TEXT)
    return HttpResponse(answer.body, content_type=answer.content_type)


urlpatterns = [re_path(r"^(?P<path>.*)$", metadata_view, name="metadata")]
