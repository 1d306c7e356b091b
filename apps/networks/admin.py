from django.contrib import admin

from apps.networks.models import FloatingIP, Network, Port, Router, SecurityGroup, SecurityGroupRule, Subnet


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "network_type", "segmentation_id", "shared", "external", "status"]
    list_filter = ["network_type", "shared", "external"]
    search_fields = ["name"]


@admin.register(Subnet)
class SubnetAdmin(admin.ModelAdmin):
    list_display = ["name", "cidr", "network", "gateway_ip", "enable_dhcp", "project"]
    search_fields = ["name", "cidr"]


@admin.register(Port)
class PortAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "network", "mac_address", "device_owner", "device_id", "host", "status"]
    list_filter = ["device_owner", "status"]
    search_fields = ["name", "device_id", "mac_address"]


@admin.register(Router)
class RouterAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "gateway_network", "enable_snat", "host", "status"]
    search_fields = ["name"]


@admin.register(FloatingIP)
class FloatingIPAdmin(admin.ModelAdmin):
    list_display = ["floating_ip_address", "fixed_ip_address", "port", "router", "project", "status"]
    search_fields = ["floating_ip_address", "fixed_ip_address"]


class RuleInline(admin.TabularInline):
    model = SecurityGroupRule
    fk_name = "security_group"
    extra = 0


@admin.register(SecurityGroup)
class SecurityGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "is_default"]
    search_fields = ["name"]
    inlines = [RuleInline]
