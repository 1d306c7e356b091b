"""Nova v2.1 request parsing and response bodies.

Response bodies hold exactly the keys of Nova's API reference at the request's microversion:
clients validate them against schemas that allow no others.
"""

import hashlib
import json
from datetime import UTC

from django.utils import timezone
from rest_framework import serializers

from agents.names import domain_name
from apps.hosts.models import HostState, HostStatus
from apps.instances.models import Flavor, Instance
from apps.instances.selectors import HostUsage, ProjectUsage, ServerUsage, instance_tags
from apps.instances.states import PowerState, api_status
from apps.networks.selectors import server_addresses, server_security_groups
from apps.volumes.api.serializers import server_body_volumes
from apps.volumes.selectors import servers_volumes
from cloudmgr.api.microversions import Version, in_span
from cloudmgr.api.versions import link, public_url

BASE_VERSION = Version(2, 1)

# The strings Nova's ``boolean`` parameter type takes besides JSON true and false.
NOVA_TRUE = frozenset({"True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes", "yes"})
NOVA_FALSE = frozenset({"False", "FALSE", "false", "0", "OFF", "Off", "off", "NO", "No", "no"})


def nova_boolean(value) -> bool | None:
    """Nova's ``boolean`` parameter type: true/false, or one of its spellings as a string; None if
    ``value`` is neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in NOVA_TRUE | NOVA_FALSE:
        return value in NOVA_TRUE
    return None


NOT_BOOLEAN = ("is not a boolean (true or false, or a string such as 'True', 'yes', 'on', '1', 'False', 'no', "
               "'off', '0').")


def _time(value) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _usage_time(value) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def resource_links(collection: str, object_id: str) -> list[dict]:
    base = f"compute/v2.1/{collection}/{object_id}"
    return [link("self", public_url(base)), link("bookmark", public_url(f"compute/{collection}/{object_id}"))]


class ServerCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255, allow_blank=False, trim_whitespace=True)
    # Empty (or absent) for a server booted from a volume (block_device_mapping_v2).
    imageRef = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    block_device_mapping_v2 = serializers.JSONField(required=False, default=None)
    flavorRef = serializers.CharField(max_length=255)
    availability_zone = serializers.CharField(max_length=255, required=False, allow_null=True)
    key_name = serializers.CharField(max_length=255, required=False, allow_null=True)
    user_data = serializers.CharField(max_length=65535, required=False, allow_null=True, allow_blank=True)
    metadata = serializers.DictField(child=serializers.CharField(max_length=255, allow_blank=True), required=False)
    min_count = serializers.IntegerField(min_value=1, required=False, default=1)
    max_count = serializers.IntegerField(min_value=1, required=False, default=None, allow_null=True)
    return_reservation_id = serializers.BooleanField(required=False, default=False)
    networks = serializers.JSONField(required=False, allow_null=True, default=None)
    security_groups = serializers.ListField(child=serializers.DictField(), required=False, allow_null=True,
                                            default=None)
    config_drive = serializers.JSONField(required=False, default=False)

    def validate_config_drive(self, value):
        parsed = nova_boolean(value)
        if parsed is None:
            raise serializers.ValidationError(f"{value!r} {NOT_BOOLEAN}")
        return parsed

    def validate_networks(self, value):
        """Nova's networks: "auto", "none", or [{uuid | port, fixed_ip, tag}]. An empty list (what
        `openstack server create` sends without --nic) asks for what an absent one does."""
        if value is None or value in ("auto", "none"):
            return value
        if value == []:
            return None
        if not isinstance(value, list) or not all(
                isinstance(item, dict) and (item.get("uuid") or item.get("port"))
                and not set(item) - {"uuid", "port", "fixed_ip", "tag"} for item in value):
            raise serializers.ValidationError("networks must be 'auto', 'none' or a list of {uuid | port, fixed_ip}.")
        return value

    def validate_security_groups(self, value):
        if value is None:
            return None
        if not all(isinstance(group.get("name"), str) and group["name"] for group in value):
            raise serializers.ValidationError("Each security group needs a name.")
        return [group["name"] for group in value]

    def validate_user_data(self, value):
        import base64
        import binascii

        if value:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise serializers.ValidationError("user_data must be base64 encoded.") from exc
        return value or ""


class FlavorCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255)
    id = serializers.CharField(max_length=255, required=False, allow_null=True)
    ram = serializers.IntegerField(min_value=1)
    vcpus = serializers.IntegerField(min_value=1)
    disk = serializers.IntegerField(min_value=0)
    swap = serializers.IntegerField(min_value=0, required=False, default=0)
    rxtx_factor = serializers.FloatField(min_value=0.0001, required=False, default=1.0)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True, default="")


class KeypairCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255)
    public_key = serializers.CharField(required=False, allow_null=True)
    type = serializers.ChoiceField(choices=["ssh", "x509"], required=False, default="ssh")


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


def _addresses(instance: Instance) -> dict:
    """Nova's addresses of the server's ports: set on list pages in one query by the views
    (``network_addresses``), read here for a single server."""
    cached = getattr(instance, "network_addresses", None)
    if cached is None:
        cached = server_addresses(device_ids=[str(instance.id)])[str(instance.id)]
    return cached


def _security_groups(instance: Instance) -> list[dict]:
    """The security groups of the server's ports: set on list pages in one query by the views
    (``network_security_groups``), read here for a single server."""
    cached = getattr(instance, "network_security_groups", None)
    if cached is None:
        cached = server_security_groups(device_ids=[str(instance.id)])[str(instance.id)]
    return cached


def _volumes(instance: Instance) -> list[tuple[str, bool]]:
    """The server's attached volumes: set on list pages in one query by the views
    (``attached_volumes``), read here for a single server."""
    cached = getattr(instance, "attached_volumes", None)
    if cached is None:
        cached = servers_volumes(instance_ids=[instance.pk])[str(instance.pk)]
    return cached


def server_basic(instance: Instance, *, version: Version = BASE_VERSION) -> dict:
    """The server as Nova's update and rebuild answer it (no extension attributes before 2.75)."""
    image = (
        {"id": str(instance.image_id), "links": [link("bookmark", public_url(f"compute/images/{instance.image_id}"))]}
        if instance.image_id
        else ""
    )
    body = {
        **server_summary(instance),
        "status": api_status(instance.vm_state, instance.task_state),
        "tenant_id": instance.project_id.hex,
        "user_id": instance.user_id.hex,
        "metadata": dict(instance.metadata or {}),
        "hostId": _host_id(instance),
        "image": image,
        "flavor": {"id": instance.flavor_id, "links": [link("bookmark", public_url(f"compute/flavors/{instance.flavor_id}"))]},
        "created": _time(instance.created_at),
        "updated": _time(instance.updated_at),
        "addresses": _addresses(instance),
        "accessIPv4": "",
        "accessIPv6": "",
        "OS-DCF:diskConfig": "MANUAL",
        "progress": 0,
    }
    if in_span(version, "2.9"):
        body["locked"] = instance.locked
    if in_span(version, "2.19"):
        body["description"] = instance.description
    if in_span(version, "2.26"):
        body["tags"] = instance_tags(instance=instance)  # prefetched on list pages
    if instance.vm_state in ("error", "deleted"):  # Nova shows the fault of these only
        fault = next(iter(instance.faults.all()), None)  # newest first; prefetched on list pages
        if fault is not None:
            body["fault"] = {"code": fault.code, "message": fault.message, "created": _time(fault.created_at)}
    return body


def _extended_attributes(instance: Instance) -> dict:
    """Nova 2.3's admin-only attributes (for the EC2 API). Images boot with their own kernel,
    so there is never a separate kernel or ramdisk; the root disk is virtio, the first one."""
    return {
        "OS-EXT-SRV-ATTR:hostname": instance.hostname,
        "OS-EXT-SRV-ATTR:reservation_id": instance.reservation_id,
        "OS-EXT-SRV-ATTR:launch_index": instance.launch_index,
        "OS-EXT-SRV-ATTR:kernel_id": "",
        "OS-EXT-SRV-ATTR:ramdisk_id": "",
        "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda" if instance.host_id else None,
        "OS-EXT-SRV-ATTR:user_data": instance.user_data or None,
    }


def _host_status(host) -> str:
    """Nova's ``host_status`` (2.16) of a server's host: forced down, disabled, heartbeats."""
    if host is None:
        return ""
    if host.forced_down:
        return "DOWN"
    if host.status == HostStatus.DISABLED:
        return "MAINTENANCE"
    return "UP" if host.state == HostState.UP else "UNKNOWN"


def server_detail(instance: Instance, *, is_admin: bool = False, version: Version = BASE_VERSION) -> dict:
    body = {
        **server_basic(instance, version=version),
        "OS-EXT-AZ:availability_zone": instance.availability_zone,
        "config_drive": "True" if instance.config_drive else "",
        "key_name": instance.key_name,
        "OS-SRV-USG:launched_at": _usage_time(instance.launched_at),
        "OS-SRV-USG:terminated_at": _usage_time(instance.terminated_at),
        "OS-EXT-STS:vm_state": instance.vm_state,
        "OS-EXT-STS:task_state": instance.task_state,
        "OS-EXT-STS:power_state": PowerState(instance.power_state).value,
        "os-extended-volumes:volumes_attached": server_body_volumes(_volumes(instance), version=version),
    }
    if groups := _security_groups(instance):  # Nova leaves the key out for a server without any
        body["security_groups"] = groups
    if is_admin:
        hostname = instance.host.hostname if instance.host else None
        body["OS-EXT-SRV-ATTR:host"] = hostname
        body["OS-EXT-SRV-ATTR:hypervisor_hostname"] = hostname
        body["OS-EXT-SRV-ATTR:instance_name"] = domain_name(str(instance.id))
        if in_span(version, "2.3"):
            body.update(_extended_attributes(instance))
        if in_span(version, "2.16"):
            body["host_status"] = _host_status(instance.host)
    return body


def keypair_body(keypair, *, version: Version = BASE_VERSION, private_key: str | None = None,
                 detail: bool = False, created: bool = False) -> dict:
    """A key pair in a list (name, key, fingerprint), as created (+ user_id, the private key
    once) or shown (+ user_id, times, id); its ``type`` from 2.2."""
    body = {"name": keypair.name, "public_key": keypair.public_key, "fingerprint": keypair.fingerprint}
    if detail or created:
        body["user_id"] = keypair.user_id.hex
    if detail:
        body.update({"created_at": _usage_time(keypair.created_at), "updated_at": None, "deleted_at": None,
                     "deleted": False, "id": keypair.pk.int % (2**31)})
    if private_key is not None:
        body["private_key"] = private_key
    if in_span(version, "2.2"):
        body["type"] = keypair.type
    return body


def interface_body(port) -> dict:
    """Nova's interfaceAttachment of a server's port."""
    return {
        "port_state": port.status, "port_id": str(port.pk), "net_id": str(port.network_id),
        "mac_addr": port.mac_address,
        "fixed_ips": [{"subnet_id": str(a.subnet_id), "ip_address": a.ip_address} for a in port.fixed_ips.all()],
    }


def server_group_body(group, *, version: Version = BASE_VERSION) -> dict:
    members = [str(m.pk) for m in group.members.all() if m.deleted_at is None]
    body = {"id": str(group.pk), "name": group.name, "policies": [group.policy], "members": members,
            "metadata": {}}
    if in_span(version, "2.13"):
        body.update(project_id=group.project_id.hex, user_id=group.user_id.hex)
    return body


def _event_time(value) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def instance_action_body(action, *, events: bool = False) -> dict:
    body = {
        "action": action.action,
        "instance_uuid": str(action.instance_id),
        "message": action.message or None,
        "project_id": action.instance.project_id.hex,
        "request_id": action.request_id,
        "start_time": _event_time(action.created_at),
        "user_id": action.user_id.hex if action.user_id else None,
    }
    if events:
        body["events"] = [
            {"event": e.event, "start_time": _event_time(e.started_at), "finish_time": _event_time(e.finished_at),
             "result": e.result or None, "traceback": None}
            for e in action.events.all()
        ]
    return body


def security_group_body(group) -> dict:
    """A security group as Nova shows one it reads from Neutron: its ingress rules only, in Nova's
    rule format (nova/network/security_group_api.py and api/openstack/compute/security_groups.py)."""
    return {"id": str(group.id), "name": group.name, "description": group.description,
            "tenant_id": group.project_id.hex,
            "rules": [_security_group_rule_body(rule) for rule in group.rules.all() if rule.direction == "ingress"]}


def _security_group_rule_body(rule) -> dict:
    from_port, to_port = rule.port_range_min, rule.port_range_max
    if rule.protocol and from_port is None and to_port is None:
        # Nova's reading of "any port": the whole range for TCP and UDP, -1 otherwise
        from_port, to_port = (1, 65535) if rule.protocol.upper() in ("TCP", "UDP") else (-1, -1)
    body = {"id": str(rule.id), "parent_group_id": str(rule.security_group_id), "ip_protocol": rule.protocol,
            "from_port": from_port, "to_port": to_port, "group": {}, "ip_range": {}}
    if rule.remote_group_id:
        body["group"] = {"name": rule.remote_group.name, "tenant_id": rule.remote_group.project_id.hex}
    else:
        body["ip_range"] = {"cidr": rule.remote_ip_prefix or "0.0.0.0/0"}  # Nova's default, IPv6 rules too
    return body


# Hosts report no address of their own: every service of this cloud runs on the one box.
HOST_IP = "127.0.0.1"


def hypervisor_body(host, usage, running: int, *, detail: bool, version: Version = BASE_VERSION) -> dict:
    """Nova's hypervisor; ``cpu_info`` is the host CPU as an object from 2.28, as a JSON string before."""
    body = {"id": str(host.pk), "hypervisor_hostname": host.hostname, "state": host.state, "status": host.status}
    if detail:
        body.update({
            "vcpus": host.vcpus, "memory_mb": host.memory_mib, "local_gb": host.disk_gb,
            "vcpus_used": usage.vcpus, "memory_mb_used": usage.memory_mib, "local_gb_used": usage.disk_gb,
            "free_ram_mb": host.memory_mib - usage.memory_mib, "free_disk_gb": host.disk_gb - usage.disk_gb,
            "hypervisor_type": "QEMU", "hypervisor_version": host.hypervisor_version, "running_vms": running,
            "current_workload": 0, "disk_available_least": host.disk_gb - usage.disk_gb, "host_ip": HOST_IP,
            "cpu_info": host.cpu_info if in_span(version, "2.28") else json.dumps(host.cpu_info),
            "service": {"host": host.hostname, "id": str(host.pk), "disabled_reason": host.disabled_reason or None},
        })
    return body


def migration_body(migration, *, version: Version = BASE_VERSION) -> dict:
    """Nova's os-migrations entry; ``migration_type`` from 2.23 (links only for live migrations)."""
    body = {
        "id": migration.id, "status": migration.status, "instance_uuid": str(migration.instance_id),
        "source_compute": migration.source_compute, "source_node": migration.source_compute,
        "dest_compute": migration.dest_compute, "dest_node": migration.dest_compute, "dest_host": HOST_IP,
        "old_instance_type_id": migration.old_flavor_ref, "new_instance_type_id": migration.new_flavor_ref,
        "created_at": _naive_utc(migration.created_at), "updated_at": _naive_utc(migration.updated_at),
    }
    if in_span(version, "2.23"):
        body["migration_type"] = migration.migration_type
    return body


def host_resources_body(host, used, by_project: dict) -> list[dict]:
    """Nova's os-hosts show: the host's totals, its use, then each project's. (used_now) and
    (used_max) are both what its instances claim: no memory is reserved for the host."""
    def resource(project, usage):
        return {"resource": {"host": host.hostname, "project": project, "cpu": usage.vcpus,
                             "memory_mb": usage.memory_mib, "disk_gb": usage.disk_gb}}

    total = HostUsage(vcpus=host.vcpus, memory_mib=host.memory_mib, disk_gb=host.disk_gb)
    return [resource("(total)", total), resource("(used_now)", used), resource("(used_max)", used),
            *(resource(project, usage) for project, usage in by_project.items())]


def aggregate_body(aggregate, *, members: bool = True) -> dict:
    """Nova's aggregate before 2.41 (no uuid); a create's answer has no hosts and metadata."""
    body = {"id": aggregate.id, "name": aggregate.name, "availability_zone": aggregate.availability_zone,
            "created_at": _naive_utc(aggregate.created_at), "updated_at": _naive_utc(aggregate.updated_at),
            "deleted": False, "deleted_at": None}
    if members:
        body.update(hosts=[host.hostname for host in aggregate.hosts.all()], metadata=aggregate.metadata)
    return body


def service_body(host, *, version: Version = BASE_VERSION) -> dict:
    body = {
        "id": str(host.pk), "binary": "nova-compute", "host": host.hostname, "zone": host.availability_zone,
        "status": host.status, "state": host.state, "updated_at": _usage_time(host.last_heartbeat),
        "disabled_reason": host.disabled_reason or None,
    }
    if in_span(version, "2.11"):
        body["forced_down"] = host.forced_down
    return body


def _naive_utc(value) -> str | None:
    """Nova's usage times: UTC without an offset, as Python prints a naive datetime."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() if value else None


def server_usage_body(usage: ServerUsage, *, now) -> dict:
    instance = usage.instance
    uptime = ((instance.terminated_at or now) - instance.launched_at).total_seconds()
    return {
        "instance_id": str(instance.id), "name": instance.name, "tenant_id": instance.project_id.hex,
        "flavor": instance.flavor.name, "hours": usage.hours, "vcpus": instance.vcpus,
        "memory_mb": instance.memory_mib, "local_gb": usage.local_gb, "state": usage.state,
        "started_at": _naive_utc(instance.launched_at), "ended_at": _naive_utc(instance.terminated_at),
        "uptime": max(int(uptime), 0),
    }


def project_usage_body(report: ProjectUsage, *, detailed: bool = True) -> dict:
    body = {
        "tenant_id": report.project_id, "start": _naive_utc(report.start), "stop": _naive_utc(report.stop),
        "total_hours": report.total_hours, "total_vcpus_usage": report.vcpu_hours,
        "total_memory_mb_usage": report.ram_mib_hours, "total_local_gb_usage": report.disk_gb_hours,
    }
    if detailed:
        now = timezone.now()
        body["server_usages"] = [server_usage_body(usage, now=now) for usage in report.servers]
    return body
