"""Cinder v3 paths, mounted at /volume/ (no trailing slashes, as Cinder's):
/volume/v3/{project_id}/<collection>..."""

from django.urls import path, re_path

from apps.volumes.api import views as v
from cloudmgr.api.errors import ServiceNotFoundView

P = "v3/<str:project_id>"

types = v.VolumeTypeViewSet
volumes = v.VolumeViewSet
snapshots = v.SnapshotViewSet
attachments = v.AttachmentViewSet
backups = v.BackupViewSet
transfers = v.TransferViewSet
quotas = v.QuotaSetViewSet
messages = v.MessageViewSet


def metadata(collection: str, viewset) -> list:
    return [
        path(f"{P}/{collection}/<str:pk>/metadata",
             viewset.as_view({"get": "metadata_list", "post": "metadata_create", "put": "metadata_replace"})),
        path(f"{P}/{collection}/<str:pk>/metadata/<str:key>",
             viewset.as_view({"get": "metadata_show", "put": "metadata_update_item",
                              "delete": "metadata_delete_item"})),
    ]


urlpatterns = [
    path("", v.VersionsView.as_view()),
    path("v3", v.VersionView.as_view()),
    path("v3/", v.VersionView.as_view()),
    path(P, v.VersionView.as_view()),
    path(f"{P}/", v.VersionView.as_view()),
    path(f"{P}/types", types.as_view({"get": "list", "post": "create"})),
    path(f"{P}/types/<str:pk>", types.as_view({"get": "retrieve", "put": "update", "delete": "destroy"})),
    path(f"{P}/types/<str:pk>/action", types.as_view({"post": "type_action"})),
    path(f"{P}/types/<str:pk>/os-volume-type-access", types.as_view({"get": "access_list"})),
    path(f"{P}/types/<str:pk>/extra_specs", types.as_view({"get": "extra_specs_list", "post": "extra_specs_create"})),
    path(f"{P}/types/<str:pk>/extra_specs/<str:key>",
         types.as_view({"get": "extra_spec_show", "put": "extra_spec_update", "delete": "extra_spec_destroy"})),
    path(f"{P}/volumes", volumes.as_view({"get": "list", "post": "create"})),
    path(f"{P}/volumes/detail", volumes.as_view({"get": "list_detail"})),
    path(f"{P}/volumes/summary", volumes.as_view({"get": "summary"})),
    path(f"{P}/volumes/<str:pk>", volumes.as_view({"get": "retrieve", "put": "update", "delete": "destroy"})),
    path(f"{P}/volumes/<str:pk>/action", volumes.as_view({"post": "volume_action"})),
    *metadata("volumes", volumes),
    path(f"{P}/snapshots", snapshots.as_view({"get": "list", "post": "create"})),
    path(f"{P}/snapshots/detail", snapshots.as_view({"get": "list_detail"})),
    path(f"{P}/snapshots/<str:pk>", snapshots.as_view({"get": "retrieve", "put": "update", "delete": "destroy"})),
    path(f"{P}/snapshots/<str:pk>/action", snapshots.as_view({"post": "snapshot_action"})),
    *metadata("snapshots", snapshots),
    path(f"{P}/attachments", attachments.as_view({"get": "list", "post": "create"})),
    path(f"{P}/attachments/detail", attachments.as_view({"get": "list_detail"})),
    path(f"{P}/attachments/<str:pk>",
         attachments.as_view({"get": "retrieve", "put": "update", "delete": "destroy"})),
    path(f"{P}/backups", backups.as_view({"get": "list", "post": "create"})),
    path(f"{P}/backups/detail", backups.as_view({"get": "list_detail"})),
    path(f"{P}/backups/<str:pk>", backups.as_view({"get": "retrieve", "put": "update", "delete": "destroy"})),
    path(f"{P}/backups/<str:pk>/restore", backups.as_view({"post": "restore"})),
    path(f"{P}/backups/<str:pk>/action", backups.as_view({"post": "backup_action"})),
    path(f"{P}/os-volume-transfer", transfers.as_view({"get": "list", "post": "create"})),
    path(f"{P}/os-volume-transfer/detail", transfers.as_view({"get": "list_detail"})),
    path(f"{P}/os-volume-transfer/<str:pk>", transfers.as_view({"get": "retrieve", "delete": "destroy"})),
    path(f"{P}/os-volume-transfer/<str:pk>/accept", transfers.as_view({"post": "accept"})),
    path(f"{P}/os-quota-sets/<str:pk>", quotas.as_view({"get": "retrieve", "put": "update", "delete": "destroy"})),
    path(f"{P}/os-quota-sets/<str:pk>/defaults", quotas.as_view({"get": "defaults"})),
    path(f"{P}/limits", v.LimitsViewSet.as_view({"get": "retrieve"})),
    path(f"{P}/messages", messages.as_view({"get": "list"})),
    path(f"{P}/messages/<str:pk>", messages.as_view({"get": "retrieve", "delete": "destroy"})),
    path(f"{P}/resource_filters", v.ResourceFiltersViewSet.as_view({"get": "list"})),
    path(f"{P}/os-availability-zone", v.AvailabilityZoneViewSet.as_view({"get": "list"})),
    path(f"{P}/extensions", v.ExtensionViewSet.as_view({"get": "list"})),
    re_path(r"^.*$", ServiceNotFoundView.as_view(error_style="nova")),
]
