from django.utils.functional import SimpleLazyObject

from apps.portal.selectors import current_project as _current_project
from apps.tenants.selectors import is_cloud_admin, project_list

# The navbar's sections, by the URL names of the tenants app's pages; the rest are "identity".
_API_ACCESS_PAGES = frozenset(
    {"api_access", "clouds_yaml", "openrc", "credential_create", "credential_file", "credential_delete"}
)


def _section(request) -> str:
    """Which navbar entry the page belongs to: instances, api-access, identity or account."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return ""
    if match.namespace == "tenants":
        return "api-access" if match.url_name in _API_ACCESS_PAGES else "identity"
    if match.namespace == "instances":
        return "instances"
    if request.path.startswith("/accounts/"):
        return "account"
    return ""


def current_project(request):
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {
        # A portal view has looked it up already (apps.portal.decorators.portal_view).
        "current_project": getattr(request, "portal_project", None) or _current_project(request=request),
        # A lazy queryset: only the navbar's project switcher reads it, on full pages.
        "portal_projects": project_list(user=request.user),
        # The navbar shows the Identity menu (projects, users, role assignments) to cloud admins.
        # Lazy too: fragments that htmx polls never ask.
        "portal_is_cloud_admin": SimpleLazyObject(lambda: is_cloud_admin(user=request.user)),
        "portal_section": _section(request),
    }
