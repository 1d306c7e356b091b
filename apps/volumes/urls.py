"""The portal's volume pages (the API's are in apps/volumes/api/urls.py)."""

from django.urls import path

from apps.volumes import views

app_name = "volumes"

urlpatterns = [
    path("", views.volume_list, name="list"),
    path("rows/", views.volume_rows, name="rows"),
    path("create/", views.volume_create, name="create"),
    path("<uuid:volume_id>/", views.volume_detail, name="detail"),
    path("<uuid:volume_id>/overview/", views.volume_overview, name="overview"),
    path("<uuid:volume_id>/action/<str:action>/", views.volume_action, name="action"),
    path("snapshots/", views.snapshot_list, name="snapshots"),
    path("snapshots/rows/", views.snapshot_rows, name="snapshot-rows"),
    path("snapshots/<uuid:snapshot_id>/delete/", views.snapshot_delete, name="snapshot-delete"),
    path("backups/", views.backup_list, name="backups"),
    path("backups/rows/", views.backup_rows, name="backup-rows"),
    path("backups/<uuid:backup_id>/restore/", views.backup_restore, name="backup-restore"),
    path("backups/<uuid:backup_id>/delete/", views.backup_delete, name="backup-delete"),
]
