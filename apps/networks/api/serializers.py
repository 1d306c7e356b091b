"""Neutron v2.0 request parsing and response bodies.

A request body is checked attribute by attribute against the resource's table (which attributes
a POST or a PUT may carry and their types): an unknown attribute is 400 "Unrecognized
attribute(s)", a read-only one 400 "Cannot update read-only attribute", a value of the wrong type
400, as Neutron's API layer. The services validate the values themselves.

Bodies carry the attributes of the extensions /v2.0/extensions lists, and no others.
"""

from collections.abc import Callable
from dataclasses import dataclass

from apps.networks import selectors
from apps.networks.errors import bad_request, invalid_input
from apps.networks.models import FloatingIP, Network, Port, Router, SecurityGroup, SecurityGroupRule, Subnet

# --- request attributes ----------------------------------------------------------------------


def _string(value, name):
    if not isinstance(value, str):
        raise invalid_input(f"'{value}' is not a valid string for {name}.")
    return value


def _string_or_none(value, name):
    return None if value is None else _string(value, name)


def _boolean(value, name):
    """Neutron's convert_to_boolean: booleans, 0/1 and "true"/"false"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise invalid_input(f"'{value}' cannot be converted to boolean for {name}.")


def _integer(value, name):
    if isinstance(value, bool):
        raise invalid_input(f"'{value}' is not an integer for {name}.")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid_input(f"'{value}' is not an integer for {name}.") from None


def _integer_or_none(value, name):
    return None if value is None else _integer(value, name)


def _list(value, name):
    if not isinstance(value, list):
        raise invalid_input(f"'{value}' is not a list for {name}.")
    return value


def _list_or_none(value, name):
    return None if value is None else _list(value, name)


def _dict_or_none(value, name):
    if value is not None and not isinstance(value, dict):
        raise invalid_input(f"'{value}' is not a dictionary for {name}.")
    return value


def _any(value, name):
    return value


def _none_only(value, name):
    if value is not None:
        raise bad_request(f"{name} is not supported by this cloud (it has no subnet pools or segments).")
    return value


def _normal_vnic(value, name):
    if value != "normal":
        raise invalid_input(f"{name} {value} is not supported: only 'normal'.")
    return value


def _empty_dict(value, name):
    if value not in (None, {}):
        raise invalid_input(f"{name} is not supported: give {{}}.")
    return value


@dataclass(frozen=True)
class Attr:
    convert: Callable
    post: bool = True
    put: bool = True
    key: str | None = None  # the service's keyword, when it differs from the wire name


_OWNER = {"tenant_id": Attr(_string, put=False), "project_id": Attr(_string, put=False)}

NETWORK = {
    "name": Attr(_string), "description": Attr(_string), "admin_state_up": Attr(_boolean), "shared": Attr(_boolean),
    "router:external": Attr(_boolean, key="external"), "is_default": Attr(_boolean), "mtu": Attr(_integer),
    "port_security_enabled": Attr(_boolean),
    "provider:network_type": Attr(_string, put=False, key="network_type"),
    "provider:physical_network": Attr(_string_or_none, put=False, key="physical_network"),
    "provider:segmentation_id": Attr(_integer_or_none, put=False, key="segmentation_id"),
    **_OWNER,
}
SUBNET = {
    "name": Attr(_string), "description": Attr(_string), "network_id": Attr(_string, put=False),
    "ip_version": Attr(_integer, put=False), "cidr": Attr(_string_or_none, put=False),
    "gateway_ip": Attr(_string_or_none), "allocation_pools": Attr(_list), "dns_nameservers": Attr(_list_or_none),
    "host_routes": Attr(_list_or_none), "enable_dhcp": Attr(_boolean),
    "ipv6_ra_mode": Attr(_string_or_none, put=False), "ipv6_address_mode": Attr(_string_or_none, put=False),
    "subnetpool_id": Attr(_none_only, put=False), "segment_id": Attr(_none_only, put=False), **_OWNER,
}
PORT = {
    "name": Attr(_string), "description": Attr(_string), "network_id": Attr(_string, put=False),
    "fixed_ips": Attr(_list), "mac_address": Attr(_string), "admin_state_up": Attr(_boolean),
    "device_id": Attr(_string), "device_owner": Attr(_string), "security_groups": Attr(_list_or_none),
    "port_security_enabled": Attr(_boolean), "allowed_address_pairs": Attr(_list_or_none),
    "binding:host_id": Attr(_string_or_none, key="host_id"), "binding:vnic_type": Attr(_normal_vnic),
    "binding:profile": Attr(_empty_dict), **_OWNER,
}
ROUTER = {
    "name": Attr(_string), "description": Attr(_string), "admin_state_up": Attr(_boolean),
    "external_gateway_info": Attr(_dict_or_none), "routes": Attr(_list_or_none, post=False), **_OWNER,
}
FLOATINGIP = {
    "floating_network_id": Attr(_string, put=False), "floating_ip_address": Attr(_string_or_none, put=False),
    "subnet_id": Attr(_string_or_none, put=False), "port_id": Attr(_string_or_none),
    "fixed_ip_address": Attr(_string_or_none), "description": Attr(_string), **_OWNER,
}
SECURITY_GROUP = {"name": Attr(_string), "description": Attr(_string), **_OWNER}
SECURITY_GROUP_RULE = {
    "security_group_id": Attr(_string, put=False), "direction": Attr(_string, put=False),
    "ethertype": Attr(_string, put=False), "protocol": Attr(_any, put=False),
    "port_range_min": Attr(_integer_or_none, put=False), "port_range_max": Attr(_integer_or_none, put=False),
    "remote_ip_prefix": Attr(_string_or_none, put=False), "remote_group_id": Attr(_string_or_none, put=False),
    "description": Attr(_string, put=False), **_OWNER,
}


def parse(body, table: dict[str, Attr], *, method: str) -> dict:
    """The request's attributes, type-checked, under the services' keyword names."""
    if not isinstance(body, dict):
        raise bad_request("The resource in the request body must be an object.")
    allowed = {name for name, attr in table.items() if (attr.post if method == "POST" else attr.put)}
    unknown = sorted(set(body) - set(table))
    if unknown:
        raise bad_request(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    read_only = sorted(set(body) - allowed)
    if read_only:
        verb = "Cannot update read-only attribute" if method == "PUT" else "Attribute not allowed in POST:"
        raise bad_request(f"{verb} {', '.join(read_only)}")
    return {table[name].key or name: table[name].convert(value, name) for name, value in body.items()}


# --- response bodies -------------------------------------------------------------------------


def _time(value) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _standard(obj) -> dict:
    """Attributes of every resource: ids, owner, description, timestamps, revision."""
    return {"id": str(obj.pk), "tenant_id": obj.project_id.hex, "project_id": obj.project_id.hex,
            "description": obj.description, "created_at": _time(obj.created_at),
            "updated_at": _time(obj.updated_at), "revision_number": obj.revision_number}


def network_body(network: Network, *, admin: bool) -> dict:
    body = {
        **_standard(network), "name": network.name, "admin_state_up": network.admin_state_up,
        "status": network.status, "shared": network.shared, "router:external": network.external,
        "is_default": network.is_default, "mtu": network.mtu, "port_security_enabled": network.port_security_enabled,
        "subnets": [str(s.pk) for s in network.subnets.all()],
    }
    if admin:
        body["provider:network_type"] = network.network_type
        body["provider:physical_network"] = network.physical_network or None
        body["provider:segmentation_id"] = network.segmentation_id
    return body


def subnet_body(subnet: Subnet) -> dict:
    return {
        **_standard(subnet), "name": subnet.name, "network_id": str(subnet.network_id),
        "ip_version": subnet.ip_version, "cidr": subnet.cidr, "gateway_ip": subnet.gateway_ip,
        "allocation_pools": list(subnet.allocation_pools), "dns_nameservers": list(subnet.dns_nameservers),
        "host_routes": list(subnet.host_routes), "enable_dhcp": subnet.enable_dhcp,
        "ipv6_ra_mode": subnet.ipv6_ra_mode, "ipv6_address_mode": subnet.ipv6_address_mode, "subnetpool_id": None,
    }


def port_body(port: Port, *, admin: bool) -> dict:
    body = {
        **_standard(port), "name": port.name, "network_id": str(port.network_id), "mac_address": port.mac_address,
        "admin_state_up": port.admin_state_up, "status": port.status, "device_id": port.device_id,
        "device_owner": port.device_owner,
        "fixed_ips": [{"subnet_id": str(a.subnet_id), "ip_address": a.ip_address} for a in port.fixed_ips.all()],
        "security_groups": [str(g.pk) for g in port.security_groups.all()],
        "port_security_enabled": port.port_security_enabled,
        "allowed_address_pairs": [{"ip_address": p["ip_address"], "mac_address": p.get("mac_address")
                                   or port.mac_address} for p in port.allowed_address_pairs or []],
    }
    if admin:
        body["binding:host_id"] = port.host.hostname if port.host else ""
        body["binding:vif_type"] = "bridge" if port.host else "unbound"
        body["binding:vnic_type"] = "normal"
        body["binding:profile"] = {}
        body["binding:vif_details"] = {"port_filter": True} if port.host else {}
    return body


def router_body(router: Router) -> dict:
    gateway = None
    if router.gateway_network_id:
        fixed = router.gateway_port.fixed_ips.all() if router.gateway_port else []
        gateway = {"network_id": str(router.gateway_network_id), "enable_snat": router.enable_snat,
                   "external_fixed_ips": [{"subnet_id": str(a.subnet_id), "ip_address": a.ip_address}
                                          for a in fixed]}
    return {**_standard(router), "name": router.name, "admin_state_up": router.admin_state_up,
            "status": router.status, "external_gateway_info": gateway, "routes": list(router.routes or [])}


def floating_ip_body(fip: FloatingIP) -> dict:
    return {
        **_standard(fip), "floating_ip_address": fip.floating_ip_address,
        "floating_network_id": str(fip.floating_network_id), "port_id": str(fip.port_id) if fip.port_id else None,
        "fixed_ip_address": fip.fixed_ip_address, "router_id": str(fip.router_id) if fip.router_id else None,
        "status": fip.status,
    }


def rule_body(rule: SecurityGroupRule) -> dict:
    body = _standard(rule)
    body.update({
        "security_group_id": str(rule.security_group_id), "direction": rule.direction, "ethertype": rule.ethertype,
        "protocol": rule.protocol, "port_range_min": rule.port_range_min, "port_range_max": rule.port_range_max,
        "remote_ip_prefix": rule.remote_ip_prefix,
        "remote_group_id": str(rule.remote_group_id) if rule.remote_group_id else None,
    })
    return body


def security_group_body(group: SecurityGroup) -> dict:
    return {**_standard(group), "name": group.name,
            "security_group_rules": [rule_body(r) for r in group.rules.all()]}


def ip_availability_body(network: Network, subnets: list[selectors.SubnetAvailability]) -> dict:
    return {
        "network_id": str(network.pk), "network_name": network.name, "tenant_id": network.project_id.hex,
        "project_id": network.project_id.hex, "total_ips": sum(s.total_ips for s in subnets),
        "used_ips": sum(s.used_ips for s in subnets),
        "subnet_ip_availability": [
            {"subnet_id": str(s.subnet.pk), "subnet_name": s.subnet.name, "cidr": s.subnet.cidr,
             "ip_version": s.subnet.ip_version, "total_ips": s.total_ips, "used_ips": s.used_ips}
            for s in subnets
        ],
    }


def only_fields(body: dict, fields: list[str]) -> dict:
    """``?fields=a&fields=b``: only those attributes (unknown names are ignored, as Neutron)."""
    if not fields:
        return body
    return {key: value for key, value in body.items() if key in fields}
