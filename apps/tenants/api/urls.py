"""Keystone v3 paths (no trailing slashes, as Keystone's)."""

from django.urls import path, re_path

from apps.tenants.api import views as v

U = "<str:user_id>"
P = "<str:project_id>"
G = "<str:group_id>"
R = "<str:role_id>"

tokens = v.AuthTokenViewSet.as_view({"post": "issue", "get": "validate", "head": "check", "delete": "revoke"})
auth = v.AuthScopeViewSet
domains = v.DomainViewSet
catalog = v.CatalogViewSet
projects = v.ProjectViewSet
grants = v.ProjectRoleViewSet
users = v.UserViewSet
credentials = v.ApplicationCredentialViewSet
groups = v.GroupViewSet
roles = v.RoleViewSet

urlpatterns = [
    path("", v.IdentityVersionsView.as_view()),
    path("v3", v.IdentityVersionView.as_view()),
    path("v3/", v.IdentityVersionView.as_view()),
    path("v3/auth/tokens", tokens),
    path("v3/auth/projects", auth.as_view({"get": "projects"})),
    path("v3/auth/domains", auth.as_view({"get": "domains"})),
    path("v3/auth/catalog", auth.as_view({"get": "catalog"})),
    path("v3/domains", domains.as_view({"get": "list", "post": "create"})),
    path("v3/domains/<str:pk>", domains.as_view({"get": "retrieve", "patch": "update", "delete": "destroy"})),
    path("v3/services", catalog.as_view({"get": "service_list"})),
    path("v3/services/<str:pk>", catalog.as_view({"get": "service_show"})),
    path("v3/endpoints", catalog.as_view({"get": "endpoint_list"})),
    path("v3/endpoints/<str:pk>", catalog.as_view({"get": "endpoint_show"})),
    path("v3/regions", catalog.as_view({"get": "region_list"})),
    path("v3/regions/<str:pk>", catalog.as_view({"get": "region_show"})),
    path("v3/projects", projects.as_view({"get": "list", "post": "create"})),
    path("v3/projects/<str:pk>", projects.as_view({"get": "retrieve", "patch": "update", "delete": "destroy"})),
    path(f"v3/projects/{P}/users/{U}/roles", grants.as_view({"get": "user_roles"})),
    path(
        f"v3/projects/{P}/users/{U}/roles/{R}",
        grants.as_view({"put": "user_grant", "get": "user_check", "head": "user_check", "delete": "user_revoke"}),
    ),
    path(f"v3/projects/{P}/groups/{G}/roles", grants.as_view({"get": "group_roles"})),
    path(
        f"v3/projects/{P}/groups/{G}/roles/{R}",
        grants.as_view({"put": "group_grant", "get": "group_check", "head": "group_check", "delete": "group_revoke"}),
    ),
    path("v3/role_assignments", v.RoleAssignmentViewSet.as_view({"get": "list"})),
    path("v3/users", users.as_view({"get": "list", "post": "create"})),
    path("v3/users/<str:pk>", users.as_view({"get": "retrieve", "patch": "update", "delete": "destroy"})),
    path("v3/users/<str:pk>/password", users.as_view({"post": "change_password"})),
    path("v3/users/<str:pk>/projects", users.as_view({"get": "projects"})),
    path("v3/users/<str:pk>/groups", users.as_view({"get": "groups"})),
    path(f"v3/users/{U}/application_credentials", credentials.as_view({"get": "list", "post": "create"})),
    path(
        f"v3/users/{U}/application_credentials/<str:pk>", credentials.as_view({"get": "retrieve", "delete": "destroy"})
    ),
    path("v3/groups", groups.as_view({"get": "list", "post": "create"})),
    path("v3/groups/<str:pk>", groups.as_view({"get": "retrieve", "patch": "update", "delete": "destroy"})),
    path("v3/groups/<str:pk>/users", groups.as_view({"get": "members"})),
    path(
        f"v3/groups/<str:pk>/users/{U}",
        groups.as_view({"put": "add_member", "get": "check_member", "head": "check_member", "delete": "remove_member"}),
    ),
    path("v3/roles", roles.as_view({"get": "list", "post": "create"})),
    path("v3/roles/<str:pk>", roles.as_view({"get": "retrieve", "patch": "update", "delete": "destroy"})),
    # Anything else under v3: Keystone's JSON 404.
    re_path(r"^v3/.+$", v.IdentityNotFoundView.as_view()),
]
