from apps.portal.selectors import current_project as _current_project
from apps.tenants.selectors import project_list


def current_project(request):
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {
        # A portal view has looked it up already (apps.portal.decorators.portal_view).
        "current_project": getattr(request, "portal_project", None) or _current_project(request=request),
        # A lazy queryset: only the navbar's project switcher reads it, on full pages.
        "portal_projects": project_list(user=request.user),
    }
