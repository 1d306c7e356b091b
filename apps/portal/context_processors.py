from apps.portal.selectors import current_project as _current_project


def current_project(request):
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {"current_project": _current_project(request=request)}
