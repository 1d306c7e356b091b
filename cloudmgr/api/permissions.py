"""Policy in one place: who may call what.

A view says what it needs with two attributes: `admin_only` (cloud operators) and
`project_scoped` (the token must name a project). Writes need the `member` or `admin` role on the
token's project; `reader` may only read.
"""

from rest_framework import permissions

from apps.tenants.selectors import is_cloud_admin, role_can_write, role_on_project


def request_role(request) -> str | None:
    """The caller's role on the token's project, looked up once per request."""
    if not hasattr(request, "_project_role"):
        project = request.auth.project if request.auth else None
        request._project_role = role_on_project(user=request.user, project=project) if project else None
    return request._project_role


class ProjectRolePermission(permissions.BasePermission):
    message = "Policy does not allow this operation to be performed."

    def has_permission(self, request, view) -> bool:
        if request.user is None or request.auth is None:
            return False
        if getattr(view, "admin_only", False) and not is_cloud_admin(user=request.user):
            return False
        if not getattr(view, "project_scoped", True):
            return True
        role = request_role(request)
        if role is None:
            return False
        return request.method in permissions.SAFE_METHODS or role_can_write(role)
