"""Nova v2.1 request parsing and response bodies.

Response bodies hold exactly the keys of Nova's API reference: clients validate them against
schemas that allow no others.
"""

import hashlib

from rest_framework import serializers

from agents.names import domain_name

from apps.instances.models import Flavor, Instance
from apps.instances.states import PowerState, api_status
from cloudmgr.api.versions import link, public_url


def _time(value) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _usage_time(value) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def resource_links(collection: str, object_id: str) -> list[dict]:
    base = f"compute/v2.1/{collection}/{object_id}"
    return [link("self", public_url(base)), link("bookmark", public_url(f"compute/{collection}/{object_id}"))]


class ServerCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255, allow_blank=False, trim_whitespace=True)
    imageRef = serializers.CharField(max_length=255)
    flavorRef = serializers.CharField(max_length=255)
    availability_zone = serializers.CharField(max_length=255, required=False)


class ConsoleOutputSerializer(serializers.Serializer):
    length = serializers.IntegerField(required=False, allow_null=True, min_value=-1)


def flavor_summary(flavor: Flavor) -> dict:
    return {"id": flavor.id, "name": flavor.name, "links": resource_links("flavors", flavor.id)}


def flavor_detail(flavor: Flavor) -> dict:
    return {
        **flavor_summary(flavor),
        "ram": flavor.ram,
        "vcpus": flavor.vcpus,
        "disk": flavor.disk,
        "swap": flavor.swap or "",
        "OS-FLV-EXT-DATA:ephemeral": flavor.ephemeral,
        "OS-FLV-DISABLED:disabled": flavor.disabled,
        "os-flavor-access:is_public": flavor.is_public,
        "rxtx_factor": flavor.rxtx_factor,
    }


def server_summary(instance: Instance) -> dict:
    return {"id": str(instance.id), "name": instance.name, "links": resource_links("servers", str(instance.id))}


def _host_id(instance: Instance) -> str:
    """Nova's hostId: the same for a project's instances on one host, opaque across projects."""
    if instance.host is None:
        return ""
    return hashlib.sha224(f"{instance.project_id.hex}{instance.host.hostname}".encode()).hexdigest()


def server_detail(instance: Instance, *, is_admin: bool = False) -> dict:
    image = (
        {"id": str(instance.image_id), "links": [link("bookmark", public_url(f"compute/images/{instance.image_id}"))]}
        if instance.image_id
        else ""
    )
    body = {
        **server_summary(instance),
        "status": api_status(instance.vm_state),
        "tenant_id": instance.project_id.hex,
        "user_id": instance.user_id.hex,
        "metadata": {},
        "hostId": _host_id(instance),
        "image": image,
        "flavor": {"id": instance.flavor_id, "links": [link("bookmark", public_url(f"compute/flavors/{instance.flavor_id}"))]},
        "created": _time(instance.created_at),
        "updated": _time(instance.updated_at),
        "addresses": {},
        "accessIPv4": "",
        "accessIPv6": "",
        "OS-DCF:diskConfig": "MANUAL",
        "progress": 0,
        "OS-EXT-AZ:availability_zone": instance.availability_zone,
        "config_drive": "",
        "key_name": None,
        "OS-SRV-USG:launched_at": _usage_time(instance.launched_at),
        "OS-SRV-USG:terminated_at": _usage_time(instance.terminated_at),
        "OS-EXT-STS:vm_state": instance.vm_state,
        "OS-EXT-STS:task_state": instance.task_state,
        "OS-EXT-STS:power_state": PowerState(instance.power_state).value,
        "os-extended-volumes:volumes_attached": [],
    }
    if is_admin:
        hostname = instance.host.hostname if instance.host else None
        body["OS-EXT-SRV-ATTR:host"] = hostname
        body["OS-EXT-SRV-ATTR:hypervisor_hostname"] = hostname
        body["OS-EXT-SRV-ATTR:instance_name"] = domain_name(str(instance.id))
    fault = next(iter(instance.faults.all()), None)  # newest first; prefetched by the views
    if fault is not None and instance.vm_state in ("error", "deleted"):
        body["fault"] = {"code": fault.code, "message": fault.message, "created": _time(fault.created_at)}
    return body
