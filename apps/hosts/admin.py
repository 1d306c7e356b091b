from django.contrib import admin

from apps.hosts.models import Host


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["hostname", "state", "status", "vcpus", "memory_mib", "disk_gb", "last_heartbeat"]
    readonly_fields = ["last_heartbeat", "agent_version"]
