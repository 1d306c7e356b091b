from apps.portal.selectors import current_project as _current_project
from apps.tenants.selectors import project_list


def current_project(request):
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {
        "current_project": _current_project(request=request),
        # A lazy queryset: only the navbar's project switcher reads it, on full pages.
        "portal_projects": project_list(user=request.user),
    }
