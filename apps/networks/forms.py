"""Portal forms for the network pages: they parse what a person types into the services'
arguments (lists from lines, a CIDR's IP version); the services decide whether it is right."""

import ipaddress
import re

from django import forms

from apps.networks.states import Direction, EtherType, Ipv6Mode

_INPUT = {"class": "form-control", "autocomplete": "off"}
_MONO = {"class": "form-control font-monospace", "spellcheck": "false"}
_SELECT = {"class": "form-select"}
_CHECK = {"class": "form-check-input"}
_SEPARATORS = re.compile(r"[\s,;]+")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").replace("\r\n", "\n").split("\n") if line.strip()]


class NetworkForm(forms.Form):
    name = forms.CharField(max_length=255, widget=forms.TextInput(attrs={**_INPUT, "autofocus": True}))
    description = forms.CharField(max_length=255, required=False, widget=forms.TextInput(attrs=_INPUT))
    admin_state_up = forms.BooleanField(required=False, initial=True, label="Enabled",
                                        widget=forms.CheckboxInput(attrs=_CHECK),
                                        help_text="A disabled network forwards no traffic.")
    shared = forms.BooleanField(required=False, label="Shared with every project",
                                widget=forms.CheckboxInput(attrs=_CHECK))

    def __init__(self, *args, is_admin: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if not is_admin:  # Neutron's policy: sharing is for cloud admins
            del self.fields["shared"]


class SubnetForm(forms.Form):
    name = forms.CharField(max_length=255, required=False, widget=forms.TextInput(attrs=_INPUT))
    cidr = forms.CharField(label="Network address (CIDR)", max_length=64,
                           widget=forms.TextInput(attrs={**_MONO, "placeholder": "10.1.0.0/24"}),
                           help_text="IPv4 or IPv6, e.g. 10.1.0.0/24 or fd00:1::/64.")
    gateway_ip = forms.CharField(label="Gateway", max_length=64, required=False,
                                 widget=forms.TextInput(attrs=_MONO),
                                 help_text="Empty: the first address of the subnet.")
    no_gateway = forms.BooleanField(required=False, label="No gateway", widget=forms.CheckboxInput(attrs=_CHECK))
    enable_dhcp = forms.BooleanField(required=False, initial=True, label="DHCP",
                                     widget=forms.CheckboxInput(attrs=_CHECK),
                                     help_text="Instances get their address from the cloud's DHCP server.")
    allocation_pools = forms.CharField(
        label="Allocation pools", required=False, widget=forms.Textarea(attrs={**_MONO, "rows": 2}),
        help_text="One range a line, START-END (e.g. 10.1.0.10-10.1.0.99). Empty: the whole subnet.")
    dns_nameservers = forms.CharField(
        label="DNS servers", required=False, widget=forms.Textarea(attrs={**_MONO, "rows": 2}),
        help_text="Addresses separated by spaces, commas or lines.")
    host_routes = forms.CharField(
        label="Host routes", required=False, widget=forms.Textarea(attrs={**_MONO, "rows": 2}),
        help_text="One route a line, DESTINATION,NEXTHOP (e.g. 192.168.0.0/16,10.1.0.254).")
    ipv6_mode = forms.ChoiceField(
        label="IPv6 address mode", required=False, widget=forms.Select(attrs=_SELECT),
        choices=[("", "None (static addresses)")] + [(m.value, m.value) for m in Ipv6Mode],
        help_text="IPv6 subnets only: how guests get their address (router advertisements and DHCPv6).")

    def clean_cidr(self):
        value = self.cleaned_data["cidr"].strip()
        try:
            if "/" not in value:  # a bare address is a forgotten prefix, not a one-address subnet
                raise ValueError(value)
            self.ip_version = ipaddress.ip_network(value, strict=False).version
        except ValueError:
            raise forms.ValidationError("Enter a network address with its prefix length, e.g. 10.1.0.0/24.") from None
        return value

    def clean_allocation_pools(self):
        pools = []
        for line in _lines(self.cleaned_data["allocation_pools"]):
            start, dash, end = line.partition("-")
            if not dash or not start.strip() or not end.strip():
                raise forms.ValidationError(f"“{line}” is not a range: write START-END.")
            pools.append({"start": start.strip(), "end": end.strip()})
        return pools or None

    def clean_dns_nameservers(self):
        return [item for item in _SEPARATORS.split(self.cleaned_data["dns_nameservers"] or "") if item]

    def clean_host_routes(self):
        routes = []
        for line in _lines(self.cleaned_data["host_routes"]):
            parts = [p for p in _SEPARATORS.split(line) if p]
            if len(parts) != 2:
                raise forms.ValidationError(f"“{line}” is not a route: write DESTINATION,NEXTHOP.")
            routes.append({"destination": parts[0], "nexthop": parts[1]})
        return routes

    def service_kwargs(self) -> dict:
        """subnet_create's arguments. Without a gateway typed the service picks the first
        address; "No gateway" is an explicit null."""
        data = self.cleaned_data
        kwargs = {
            "name": data["name"], "cidr": data["cidr"], "ip_version": self.ip_version,
            "enable_dhcp": data["enable_dhcp"], "allocation_pools": data["allocation_pools"],
            "dns_nameservers": data["dns_nameservers"], "host_routes": data["host_routes"],
        }
        if data["no_gateway"]:
            kwargs["gateway_ip"] = None
        elif data["gateway_ip"].strip():
            kwargs["gateway_ip"] = data["gateway_ip"].strip()
        if data["ipv6_mode"]:
            kwargs["ipv6_ra_mode"] = kwargs["ipv6_address_mode"] = data["ipv6_mode"]
        return kwargs


class ExternalNetworkField(forms.ModelChoiceField):
    def label_from_instance(self, network):
        cidrs = ", ".join(s.cidr for s in network.subnets.all())
        return f"{network.name or network.pk}{f' ({cidrs})' if cidrs else ''}"


class RouterForm(forms.Form):
    name = forms.CharField(max_length=255, widget=forms.TextInput(attrs=_INPUT))
    external_network = ExternalNetworkField(
        queryset=None, required=False, label="External gateway", empty_label="No gateway",
        widget=forms.Select(attrs=_SELECT),
        help_text="The network the router's outbound traffic goes to (with source NAT), and floating IPs come from.")

    def __init__(self, *args, external_networks, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["external_network"].queryset = external_networks


class GatewayForm(forms.Form):
    external_network = ExternalNetworkField(queryset=None, label="External network", empty_label=None,
                                            widget=forms.Select(attrs=_SELECT))

    def __init__(self, *args, external_networks, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["external_network"].queryset = external_networks


class SubnetField(forms.ModelChoiceField):
    def label_from_instance(self, subnet):
        return f"{subnet.network.name or subnet.network_id}: {subnet.name or subnet.pk} ({subnet.cidr})"


class InterfaceForm(forms.Form):
    subnet = SubnetField(queryset=None, empty_label="Choose a subnet", widget=forms.Select(attrs=_SELECT),
                         help_text="The router takes the subnet's gateway address.")

    def __init__(self, *args, subnets, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["subnet"].queryset = subnets


class FloatingIPAllocateForm(forms.Form):
    floating_network = ExternalNetworkField(queryset=None, label="Pool", empty_label=None,
                                            widget=forms.Select(attrs=_SELECT),
                                            help_text="The external network the address comes from.")
    description = forms.CharField(max_length=255, required=False, widget=forms.TextInput(attrs=_INPUT))

    def __init__(self, *args, external_networks, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["floating_network"].queryset = external_networks


class FloatingIPAssociateForm(forms.Form):
    """Which fixed address (of an instance's port) the floating IP leads to."""

    target = forms.ChoiceField(label="Instance address", widget=forms.Select(attrs=_SELECT))

    def __init__(self, *args, targets, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].choices = [("", "Choose an instance address")] + [(t.value, t.label) for t in targets]

    def clean_target(self):
        port_id, _, fixed_ip = self.cleaned_data["target"].partition("/")
        return {"port_id": port_id, "fixed_ip_address": fixed_ip}


class SecurityGroupForm(forms.Form):
    name = forms.CharField(max_length=255, widget=forms.TextInput(attrs=_INPUT))
    description = forms.CharField(max_length=255, required=False, widget=forms.TextInput(attrs=_INPUT))


_PROTOCOLS = [("", "Any"), ("tcp", "TCP"), ("udp", "UDP"), ("icmp", "ICMP"), ("ipv6-icmp", "ICMPv6"),
              ("sctp", "SCTP"), ("other", "Other (by number)")]


class SecurityGroupRuleForm(forms.Form):
    direction = forms.ChoiceField(choices=Direction.choices, initial=Direction.INGRESS,
                                  widget=forms.Select(attrs=_SELECT))
    ethertype = forms.ChoiceField(choices=[(e, e) for e in EtherType.values], initial=EtherType.IPV4,
                                  label="Ether type", widget=forms.Select(attrs=_SELECT))
    protocol = forms.ChoiceField(choices=_PROTOCOLS, required=False, widget=forms.Select(attrs=_SELECT))
    protocol_number = forms.IntegerField(required=False, min_value=0, max_value=255, label="Protocol number",
                                         widget=forms.NumberInput(attrs=_INPUT))
    port_range_min = forms.IntegerField(required=False, label="From port / ICMP type",
                                        widget=forms.NumberInput(attrs=_INPUT))
    port_range_max = forms.IntegerField(required=False, label="To port / ICMP code",
                                        widget=forms.NumberInput(attrs=_INPUT))
    remote_ip_prefix = forms.CharField(required=False, max_length=64, label="Remote CIDR",
                                       widget=forms.TextInput(attrs={**_MONO, "placeholder": "0.0.0.0/0"}))
    remote_group = forms.ModelChoiceField(queryset=None, required=False, label="Remote security group",
                                          empty_label="—", widget=forms.Select(attrs=_SELECT),
                                          help_text="Traffic from (or to) the members of a group, instead of a "
                                                    "CIDR. Neither: any address.")
    description = forms.CharField(max_length=255, required=False, widget=forms.TextInput(attrs=_INPUT))

    def __init__(self, *args, groups, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["remote_group"].queryset = groups

    def clean(self):
        data = super().clean()
        if data.get("protocol") == "other" and data.get("protocol_number") is None:
            self.add_error("protocol_number", "Give the protocol's number (0 to 255).")
        if (data.get("remote_ip_prefix") or "").strip() and data.get("remote_group") is not None:
            self.add_error("remote_group", "Choose a remote CIDR or a remote group, not both.")
        return data

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        protocol = data["protocol"] or None
        if protocol == "other":
            protocol = str(data["protocol_number"])
        return {
            "direction": data["direction"], "ethertype": data["ethertype"], "protocol": protocol,
            "port_range_min": data["port_range_min"], "port_range_max": data["port_range_max"],
            "remote_ip_prefix": data["remote_ip_prefix"].strip() or None,
            "remote_group_id": str(data["remote_group"].pk) if data["remote_group"] else None,
            "description": data["description"],
        }
