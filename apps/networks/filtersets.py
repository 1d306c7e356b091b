"""Neutron's list filters: any attribute of a resource, given once or more (``?name=a&name=b``
matches either), values converted as the attribute's type. A name that is not a filter of the
resource is 400, as Neutron's filter-validation extension."""

import uuid

import django_filters
from django import forms
from django.db.models import QuerySet

from apps.networks.errors import bad_request
from apps.networks.models import FloatingIP, Network, Port, Router, SecurityGroup, SecurityGroupRule, Subnet
from cloudmgr.models import INT_MAX

# Query parameters of every list that are not filters.
CONTROL_PARAMS = {"fields", "limit", "marker", "page_reverse", "sort_key", "sort_dir"}

_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def to_bool(value: str) -> bool:
    lowered = str(value).lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"'{value}' cannot be converted to boolean")


def to_uuid(value: str):
    return uuid.UUID(str(value))


def to_int(value: str) -> int:
    number = int(value)
    if abs(number) > INT_MAX:  # no column holds it (and SQLite cannot even compare it)
        raise ValueError(f"{value} is out of range")
    return number


def to_project(value: str):
    """Neutron's tenant ids are 32 hex digits; cloudmgr's project ids are UUIDs."""
    return uuid.UUID(str(value))


class _ValuesField(forms.Field):
    widget = forms.SelectMultiple

    def to_python(self, value):
        return [str(v) for v in value or []]


class ValuesFilter(django_filters.Filter):
    """Matches any of the values given for the attribute (``field_name__in``)."""

    field_class = _ValuesField

    def __init__(self, *args, convert=str, distinct: bool = False, **kwargs):
        super().__init__(*args, distinct=distinct, **kwargs)
        self.convert = convert

    def filter(self, qs: QuerySet, value):
        if not value:
            return qs
        try:
            values = [self.convert(v) for v in value]
        except (TypeError, ValueError) as exc:
            raise bad_request(f"Invalid value for filter {self.field_name}: {exc}.") from exc
        qs = qs.filter(**{f"{self.field_name}__in": values})
        return qs.distinct() if self.distinct else qs


class FixedIPsFilter(django_filters.Filter):
    """``?fixed_ips=ip_address=10.0.0.3&fixed_ips=subnet_id=<id>`` (each key may repeat)."""

    field_class = _ValuesField

    def filter(self, qs: QuerySet, value):
        wanted: dict[str, list] = {}
        for item in value or []:
            key, sep, val = item.partition("=")
            if not sep or key not in ("ip_address", "subnet_id"):
                raise bad_request(f"Invalid fixed_ips filter {item!r}: use ip_address=... or subnet_id=...")
            try:
                wanted.setdefault(key, []).append(to_uuid(val) if key == "subnet_id" else val)
            except ValueError as exc:
                raise bad_request(f"Invalid fixed_ips filter {item!r}.") from exc
        for key, values in wanted.items():
            qs = qs.filter(**{f"fixed_ips__{key}__in": values})
        return qs.distinct() if wanted else qs


def _filterset(name: str, model, filters: dict) -> type[django_filters.FilterSet]:
    base = {
        "id": ValuesFilter(field_name="id", convert=to_uuid),
        "tenant_id": ValuesFilter(field_name="project_id", convert=to_project),
        "project_id": ValuesFilter(field_name="project_id", convert=to_project),
        "revision_number": ValuesFilter(field_name="revision_number", convert=to_int),
    }
    meta = type("Meta", (), {"model": model, "fields": []})
    return type(name, (django_filters.FilterSet,), {**base, **filters, "Meta": meta})


def _text(field: str) -> ValuesFilter:
    return ValuesFilter(field_name=field)


def _flag(field: str) -> ValuesFilter:
    return ValuesFilter(field_name=field, convert=to_bool)


NetworkFilterSet = _filterset("NetworkFilterSet", Network, {
    "name": _text("name"), "description": _text("description"), "status": _text("status"),
    "admin_state_up": _flag("admin_state_up"), "shared": _flag("shared"), "router:external": _flag("external"),
    "is_default": _flag("is_default"), "mtu": ValuesFilter(field_name="mtu", convert=to_int),
    "port_security_enabled": _flag("port_security_enabled"),
    "provider:network_type": _text("network_type"), "provider:physical_network": _text("physical_network"),
    "provider:segmentation_id": ValuesFilter(field_name="segmentation_id", convert=to_int),
    "subnets": ValuesFilter(field_name="subnets__id", convert=to_uuid, distinct=True),
})

SubnetFilterSet = _filterset("SubnetFilterSet", Subnet, {
    "name": _text("name"), "description": _text("description"),
    "network_id": ValuesFilter(field_name="network_id", convert=to_uuid),
    "ip_version": ValuesFilter(field_name="ip_version", convert=to_int), "cidr": _text("cidr"),
    "gateway_ip": _text("gateway_ip"), "enable_dhcp": _flag("enable_dhcp"),
    "ipv6_ra_mode": _text("ipv6_ra_mode"), "ipv6_address_mode": _text("ipv6_address_mode"),
})

PortFilterSet = _filterset("PortFilterSet", Port, {
    "name": _text("name"), "description": _text("description"), "status": _text("status"),
    "network_id": ValuesFilter(field_name="network_id", convert=to_uuid), "mac_address": _text("mac_address"),
    "admin_state_up": _flag("admin_state_up"), "device_id": _text("device_id"), "device_owner": _text("device_owner"),
    "port_security_enabled": _flag("port_security_enabled"), "binding:host_id": _text("host__hostname"),
    "security_groups": ValuesFilter(field_name="security_groups__id", convert=to_uuid, distinct=True),
    "fixed_ips": FixedIPsFilter(field_name="fixed_ips"),
})

RouterFilterSet = _filterset("RouterFilterSet", Router, {
    "name": _text("name"), "description": _text("description"), "status": _text("status"),
    "admin_state_up": _flag("admin_state_up"),
    "external_gateway_info:network_id": ValuesFilter(field_name="gateway_network_id", convert=to_uuid),
})

FloatingIPFilterSet = _filterset("FloatingIPFilterSet", FloatingIP, {
    "description": _text("description"), "status": _text("status"),
    "floating_ip_address": _text("floating_ip_address"), "fixed_ip_address": _text("fixed_ip_address"),
    "floating_network_id": ValuesFilter(field_name="floating_network_id", convert=to_uuid),
    "port_id": ValuesFilter(field_name="port_id", convert=to_uuid),
    "router_id": ValuesFilter(field_name="router_id", convert=to_uuid),
})

SecurityGroupFilterSet = _filterset("SecurityGroupFilterSet", SecurityGroup, {
    "name": _text("name"), "description": _text("description"),
})

SecurityGroupRuleFilterSet = _filterset("SecurityGroupRuleFilterSet", SecurityGroupRule, {
    "description": _text("description"),
    "security_group_id": ValuesFilter(field_name="security_group_id", convert=to_uuid),
    "direction": _text("direction"), "ethertype": _text("ethertype"), "protocol": _text("protocol"),
    "port_range_min": ValuesFilter(field_name="port_range_min", convert=to_int),
    "port_range_max": ValuesFilter(field_name="port_range_max", convert=to_int),
    "remote_ip_prefix": _text("remote_ip_prefix"),
    "remote_group_id": ValuesFilter(field_name="remote_group_id", convert=to_uuid),
})


def apply(filterset_class: type[django_filters.FilterSet], params, queryset: QuerySet) -> QuerySet:
    """``queryset`` narrowed by the filters in ``params``; 400 for a name the resource has not."""
    unknown = sorted(set(params) - CONTROL_PARAMS - set(filterset_class.base_filters))
    if unknown:
        raise bad_request(f"[{', '.join(unknown)}] is invalid attribute for filtering", "HTTPBadRequest")
    filterset = filterset_class(data=params, queryset=queryset)
    if not filterset.is_valid():
        raise bad_request(f"Invalid filters: {filterset.errors.as_text()}")
    return filterset.qs
