"""Policy in one place: who may call what.

Keystone's model: roles `admin`, `member` and `reader` on projects (each implying the next); a
cloud operator ("cloud admin") is a user with `admin` on the admin project, or a superuser.

A view says what it needs with two attributes:
- `admin_only`: True (every action) or a set of action names, for cloud admins only;
- `project_scoped` (default True): the token must be scoped to a project the user holds a role
  on. Writes then need `member` or `admin` there; `reader` may only read.

Finer rules that depend on the object (a user may read their own user record, manage their own
application credentials) are in the selectors and services, which raise PermissionDenied or
NotFound; no view decides policy itself.
"""

from rest_framework import permissions

from apps.tenants.selectors import is_cloud_admin, role_can_write, role_on_project


def request_role(request) -> str | None:
    """The caller's highest role on the token's project (worked out with the token)."""
    token = request.auth
    if token is None or token.project is None:
        return None
    if hasattr(token, "role"):
        return token.role
    return role_on_project(user=request.user, project=token.project)


def admin_required(view) -> bool:
    admin_only = getattr(view, "admin_only", False)
    if isinstance(admin_only, (set, frozenset, list, tuple)):
        return getattr(view, "action", None) in admin_only
    return bool(admin_only)


class ProjectRolePermission(permissions.BasePermission):
    message = "Policy does not allow this operation to be performed."

    def has_permission(self, request, view) -> bool:
        if request.user is None or request.auth is None:
            return False
        if admin_required(view) and not is_cloud_admin(user=request.user):
            return False
        if not getattr(view, "project_scoped", True):
            return True
        role = request_role(request)
        if role is None:
            return False
        return request.method in permissions.SAFE_METHODS or role_can_write(role)
