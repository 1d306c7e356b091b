"""The portal's identity pages, under /identity/ beside the Keystone API (/identity/v3/, in
apps/tenants/api/urls.py)."""

from django.urls import path

from apps.tenants import views

app_name = "tenants"

urlpatterns = [
    # Every user, in the current project.
    path("api-access/", views.api_access, name="api_access"),
    path("api-access/clouds.yaml", views.clouds_yaml, name="clouds_yaml"),
    path("api-access/openrc.sh", views.openrc, name="openrc"),
    path("application-credentials/create/", views.application_credential_create, name="credential_create"),
    path("application-credentials/<uuid:credential_id>/file/", views.application_credential_file,
         name="credential_file"),
    path("application-credentials/<uuid:credential_id>/delete/", views.application_credential_delete,
         name="credential_delete"),
    # Cloud admins.
    path("projects/", views.project_list, name="project_list"),
    path("projects/create/", views.project_create, name="project_create"),
    path("projects/<uuid:project_id>/", views.project_detail, name="project_detail"),
    path("projects/<uuid:project_id>/quotas/", views.quota_update, name="quota_update"),
    path("users/", views.user_list, name="user_list"),
    path("users/create/", views.user_create, name="user_create"),
    path("users/<uuid:user_id>/enable/", views.user_enable, name="user_enable"),
    path("roles/", views.role_list, name="role_list"),
    path("roles/grant/", views.role_grant, name="role_grant"),
    path("roles/revoke/", views.role_revoke, name="role_revoke"),
]
