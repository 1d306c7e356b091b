"""Neutron's resources. Addresses are strings in their canonical (compressed) form, so that the
unique constraint on (subnet, address) is what makes a duplicate allocation impossible."""

from django.db import models

from apps.networks.states import Direction, EtherType, NetworkType, Status
from cloudmgr.models import BaseModel, TenantOwnedModel


class Network(TenantOwnedModel):
    name = models.CharField(max_length=255, blank=True, default="")
    description = models.CharField(max_length=255, blank=True, default="")
    admin_state_up = models.BooleanField(default=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    shared = models.BooleanField(default=False)
    external = models.BooleanField(default=False, help_text="router:external")
    # The external network that auto-allocated topologies (Nova's "auto") connect to.
    is_default = models.BooleanField(default=False)
    # Made by auto-allocated-topology for its project (Nova's networks "auto").
    auto_allocated = models.BooleanField(default=False)
    mtu = models.PositiveIntegerField(default=1500)
    port_security_enabled = models.BooleanField(default=True)
    network_type = models.CharField(max_length=16, choices=NetworkType.choices, default=NetworkType.LOCAL)
    # "" rather than NULL, so that the segment's unique constraint also holds for vxlan networks.
    physical_network = models.CharField(max_length=64, blank=True, default="")
    segmentation_id = models.PositiveIntegerField(null=True, blank=True)
    # Where the network's DHCP server runs (the network host when its first DHCP subnet came).
    dhcp_host = models.ForeignKey("hosts.Host", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    revision_number = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["network_type", "physical_network", "segmentation_id"], name="network_unique_segment",
                condition=models.Q(segmentation_id__isnull=False),
            ),
            models.UniqueConstraint(fields=["is_default"], condition=models.Q(is_default=True),
                                    name="network_one_default_external"),
        ]
        indexes = [models.Index(fields=["project", "created_at"])]

    def __str__(self) -> str:
        return f"{self.name or self.id}"


class Subnet(TenantOwnedModel):
    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="subnets")
    name = models.CharField(max_length=255, blank=True, default="")
    description = models.CharField(max_length=255, blank=True, default="")
    ip_version = models.PositiveSmallIntegerField(default=4)
    cidr = models.CharField(max_length=64)
    gateway_ip = models.CharField(max_length=64, null=True, blank=True)
    allocation_pools = models.JSONField(default=list, blank=True, help_text='[{"start", "end"}]')
    dns_nameservers = models.JSONField(default=list, blank=True)
    host_routes = models.JSONField(default=list, blank=True, help_text='[{"destination", "nexthop"}]')
    enable_dhcp = models.BooleanField(default=True)
    ipv6_ra_mode = models.CharField(max_length=32, null=True, blank=True)
    ipv6_address_mode = models.CharField(max_length=32, null=True, blank=True)
    revision_number = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.name or self.id} ({self.cidr})"


class SecurityGroup(BaseModel):
    """Deleted with its project: a project's default group is made on first use, and must not
    keep the project from being deleted."""

    project = models.ForeignKey("tenants.Project", on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=255, blank=True, default="")
    description = models.CharField(max_length=255, blank=True, default="")
    is_default = models.BooleanField(default=False)
    # Made by auto-allocated-topology for its project (Nova's networks "auto").
    auto_allocated = models.BooleanField(default=False)
    revision_number = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project"], condition=models.Q(is_default=True),
                                    name="securitygroup_one_default_per_project"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class SecurityGroupRule(BaseModel):
    project = models.ForeignKey("tenants.Project", on_delete=models.CASCADE, related_name="+")
    security_group = models.ForeignKey(SecurityGroup, on_delete=models.CASCADE, related_name="rules")
    direction = models.CharField(max_length=8, choices=Direction.choices)
    ethertype = models.CharField(max_length=4, choices=EtherType.choices, default=EtherType.IPV4)
    protocol = models.CharField(max_length=40, null=True, blank=True)
    port_range_min = models.IntegerField(null=True, blank=True)
    port_range_max = models.IntegerField(null=True, blank=True)
    remote_ip_prefix = models.CharField(max_length=64, null=True, blank=True)
    remote_group = models.ForeignKey(SecurityGroup, null=True, blank=True, on_delete=models.CASCADE,
                                     related_name="referencing_rules")
    description = models.CharField(max_length=255, blank=True, default="")
    revision_number = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["created_at"]


class Port(TenantOwnedModel):
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="ports")
    name = models.CharField(max_length=255, blank=True, default="")
    description = models.CharField(max_length=255, blank=True, default="")
    mac_address = models.CharField(max_length=17)
    admin_state_up = models.BooleanField(default=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DOWN)
    device_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    device_owner = models.CharField(max_length=255, blank=True, default="")
    host = models.ForeignKey("hosts.Host", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                             help_text="binding:host_id")
    port_security_enabled = models.BooleanField(default=True)
    allowed_address_pairs = models.JSONField(default=list, blank=True, help_text='[{"ip_address", "mac_address"}]')
    security_groups = models.ManyToManyField(SecurityGroup, blank=True, related_name="ports")
    # The DHCP host name of a server's port (its name, sanitized).
    hostname = models.CharField(max_length=63, blank=True, default="")
    # Made by the compute service for a server (deleted with it); a port the user handed in is
    # only unbound when the server goes (Nova's preserve_on_delete).
    delete_with_device = models.BooleanField(default=False)
    revision_number = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["network", "mac_address"], name="port_unique_mac_per_network"),
        ]
        indexes = [models.Index(fields=["project", "created_at"])]

    def __str__(self) -> str:
        return f"{self.name or self.id}"


class IPAllocation(models.Model):
    """One fixed IP of a port. The unique constraint on (subnet, ip_address) is the last line of
    defence against a duplicate address; the subnet's row lock makes allocations wait their turn."""

    port = models.ForeignKey(Port, on_delete=models.CASCADE, related_name="fixed_ips")
    subnet = models.ForeignKey(Subnet, on_delete=models.PROTECT, related_name="allocations")
    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="+")
    ip_address = models.CharField(max_length=64)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["subnet", "ip_address"], name="ipallocation_unique_address"),
        ]

    def __str__(self) -> str:
        return self.ip_address


class Router(TenantOwnedModel):
    name = models.CharField(max_length=255, blank=True, default="")
    description = models.CharField(max_length=255, blank=True, default="")
    admin_state_up = models.BooleanField(default=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    gateway_network = models.ForeignKey(Network, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    gateway_port = models.OneToOneField(Port, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    enable_snat = models.BooleanField(default=True)
    routes = models.JSONField(default=list, blank=True, help_text='[{"destination", "nexthop"}]')
    # The network host that runs the router's namespace.
    host = models.ForeignKey("hosts.Host", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    revision_number = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["project", "created_at"])]

    def __str__(self) -> str:
        return f"{self.name or self.id}"


class RouterInterface(BaseModel):
    """A router's leg on one subnet, through one port (device_owner network:router_interface)."""

    router = models.ForeignKey(Router, on_delete=models.CASCADE, related_name="interfaces")
    port = models.OneToOneField(Port, on_delete=models.CASCADE, related_name="router_interface")
    subnet = models.ForeignKey(Subnet, on_delete=models.PROTECT, related_name="router_interfaces")

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["router", "subnet"], name="routerinterface_one_per_subnet")]


class FloatingIP(TenantOwnedModel):
    """A public address of an external network (held by its own port, so that the IPAM never
    gives it twice), NATed by ``router`` to ``fixed_ip_address`` of ``port`` while associated."""

    floating_network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    floating_port = models.OneToOneField(Port, on_delete=models.PROTECT, related_name="floating_ip")
    floating_ip_address = models.CharField(max_length=64)
    port = models.ForeignKey(Port, null=True, blank=True, on_delete=models.SET_NULL, related_name="floating_ips")
    fixed_ip_address = models.CharField(max_length=64, null=True, blank=True)
    router = models.ForeignKey(Router, null=True, blank=True, on_delete=models.SET_NULL, related_name="floating_ips")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DOWN)
    description = models.CharField(max_length=255, blank=True, default="")
    revision_number = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["project", "created_at"])]
        constraints = [
            models.UniqueConstraint(fields=["port", "fixed_ip_address"], condition=models.Q(port__isnull=False),
                                    name="floatingip_one_per_fixed_ip"),
        ]

    def __str__(self) -> str:
        return self.floating_ip_address


class NetworkAgent(models.Model):
    """What the control plane last heard of a host's agent: a heartbeat with another
    ``started_at`` means the agent restarted, and the host is sent its whole network state."""

    host = models.OneToOneField("hosts.Host", primary_key=True, on_delete=models.CASCADE, related_name="+")
    started_at = models.FloatField(default=0.0)
    synced_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"network agent of {self.host_id}"
