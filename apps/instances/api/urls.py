from django.urls import path, re_path

from apps.instances.api import views
from apps.volumes.api.views import ServerVolumeAttachmentViewSet as server_volumes
from cloudmgr.api.errors import ServiceNotFoundView

flavors = views.FlavorViewSet
servers = views.ServerViewSet
keypairs = views.KeypairViewSet
quotas = views.QuotaSetViewSet
hypervisors = views.HypervisorViewSet
services = views.ServiceViewSet
groups = views.ServerGroupViewSet
zones = views.AvailabilityZoneViewSet
usages = views.SimpleTenantUsageViewSet

urlpatterns = [
    path("", views.ComputeVersionsView.as_view()),
    path("v2.1", views.ComputeVersionView.as_view()),
    path("v2.1/", views.ComputeVersionView.as_view()),
    path("v2.1/flavors", flavors.as_view({"get": "list", "post": "create"})),
    path("v2.1/flavors/detail", flavors.as_view({"get": "list_detail"})),
    path("v2.1/flavors/<str:pk>", flavors.as_view({"get": "retrieve", "delete": "destroy"})),
    path("v2.1/flavors/<str:pk>/action", flavors.as_view({"post": "flavor_action"})),
    path("v2.1/flavors/<str:pk>/os-flavor-access", flavors.as_view({"get": "access_list"})),
    path("v2.1/flavors/<str:pk>/os-extra_specs", flavors.as_view({"get": "extra_specs_list", "post": "extra_specs_create"})),
    path("v2.1/flavors/<str:pk>/os-extra_specs/<str:key>",
         flavors.as_view({"get": "extra_spec_show", "put": "extra_spec_update", "delete": "extra_spec_destroy"})),
    path("v2.1/servers", servers.as_view({"get": "list", "post": "create"})),
    path("v2.1/servers/detail", servers.as_view({"get": "list_detail"})),
    path("v2.1/servers/<str:pk>", servers.as_view({"get": "retrieve", "put": "update", "delete": "destroy"})),
    path("v2.1/servers/<str:pk>/action", servers.as_view({"post": "server_action"})),
    path("v2.1/servers/<str:pk>/remote-consoles", servers.as_view({"post": "remote_console_create"})),
    path("v2.1/servers/<str:pk>/metadata",
         servers.as_view({"get": "metadata_list", "post": "metadata_update", "put": "metadata_replace"})),
    path("v2.1/servers/<str:pk>/metadata/<str:key>",
         servers.as_view({"get": "metadata_show", "put": "metadata_set_item", "delete": "metadata_delete_item"})),
    path("v2.1/servers/<str:pk>/tags",
         servers.as_view({"get": "tags_list", "put": "tags_replace", "delete": "tags_clear"})),
    path("v2.1/servers/<str:pk>/tags/<str:tag>",
         servers.as_view({"get": "tag_show", "put": "tag_add", "delete": "tag_delete"})),
    path("v2.1/servers/<str:pk>/os-interface",
         servers.as_view({"get": "interfaces_list", "post": "interface_attach"})),
    path("v2.1/servers/<str:pk>/os-interface/<str:port_id>",
         servers.as_view({"get": "interface_show", "delete": "interface_detach"})),
    path("v2.1/servers/<str:pk>/os-instance-actions", servers.as_view({"get": "actions_list"})),
    path("v2.1/servers/<str:pk>/diagnostics", servers.as_view({"get": "diagnostics"})),
    path("v2.1/servers/<str:pk>/os-security-groups", servers.as_view({"get": "security_groups_list"})),
    path("v2.1/servers/<str:pk>/os-volume_attachments", server_volumes.as_view({"get": "list", "post": "create"})),
    path("v2.1/servers/<str:pk>/os-volume_attachments/<str:volume_id>",
         server_volumes.as_view({"get": "retrieve", "delete": "destroy"})),
    path("v2.1/servers/<str:pk>/os-instance-actions/<str:request_id>", servers.as_view({"get": "actions_show"})),
    path("v2.1/os-keypairs", keypairs.as_view({"get": "list", "post": "create"})),
    path("v2.1/os-keypairs/<str:pk>", keypairs.as_view({"get": "retrieve", "delete": "destroy"})),
    path("v2.1/limits", views.LimitsView.as_view({"get": "retrieve"})),
    path("v2.1/os-simple-tenant-usage", usages.as_view({"get": "list"})),
    path("v2.1/os-simple-tenant-usage/<str:pk>", usages.as_view({"get": "retrieve"})),
    path("v2.1/os-availability-zone", zones.as_view({"get": "list"})),
    path("v2.1/os-availability-zone/detail", zones.as_view({"get": "list_detail"})),
    path("v2.1/os-hypervisors", hypervisors.as_view({"get": "list"})),
    path("v2.1/os-hypervisors/detail", hypervisors.as_view({"get": "list_detail"})),
    path("v2.1/os-hypervisors/statistics", hypervisors.as_view({"get": "statistics"})),
    path("v2.1/os-hypervisors/<str:pk>", hypervisors.as_view({"get": "retrieve"})),
    path("v2.1/os-hypervisors/<str:pk>/uptime", hypervisors.as_view({"get": "uptime"})),
    path("v2.1/os-hypervisors/<str:pattern>/search", hypervisors.as_view({"get": "search"})),
    path("v2.1/os-hypervisors/<str:pattern>/servers", hypervisors.as_view({"get": "servers"})),
    path("v2.1/os-migrations", views.MigrationViewSet.as_view({"get": "list"})),
    path("v2.1/os-hosts", views.HostViewSet.as_view({"get": "list"})),
    path("v2.1/os-hosts/<str:pk>", views.HostViewSet.as_view({"get": "retrieve", "put": "update"})),
    *[path(f"v2.1/os-hosts/<str:pk>/{action}", views.HostViewSet.as_view({"get": "power_action"}), {"action": action})
      for action in ("startup", "shutdown", "reboot")],
    path("v2.1/os-aggregates", views.AggregateViewSet.as_view({"get": "list", "post": "create"})),
    path("v2.1/os-aggregates/<str:pk>",
         views.AggregateViewSet.as_view({"get": "retrieve", "put": "update", "delete": "destroy"})),
    path("v2.1/os-aggregates/<str:pk>/action", views.AggregateViewSet.as_view({"post": "action"})),
    path("v2.1/os-services", services.as_view({"get": "list"})),
    path("v2.1/os-services/enable", services.as_view({"put": "enable"})),
    path("v2.1/os-services/disable", services.as_view({"put": "disable"})),
    path("v2.1/os-services/disable-log-reason", services.as_view({"put": "disable"})),
    path("v2.1/os-services/force-down", services.as_view({"put": "force_down"})),
    path("v2.1/os-services/<str:pk>", services.as_view({"put": "update"})),
    path("v2.1/os-quota-sets/<str:pk>", quotas.as_view({"get": "retrieve", "put": "update", "delete": "destroy"})),
    path("v2.1/os-quota-sets/<str:pk>/detail", quotas.as_view({"get": "quota_detail"})),
    path("v2.1/os-quota-sets/<str:pk>/defaults", quotas.as_view({"get": "quota_defaults"})),
    path("v2.1/os-server-groups", groups.as_view({"get": "list", "post": "create"})),
    path("v2.1/os-server-groups/<str:pk>", groups.as_view({"get": "retrieve", "delete": "destroy"})),
    re_path(r"^.*$", ServiceNotFoundView.as_view(error_style="nova")),
]
