"""The portal's front-door plumbing: who is logged in, which project they act in, and whether
their role there lets them change things. Views stay thin: parse, call one service, render."""

from functools import wraps
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import redirect, render
from django.urls import reverse
from django_htmx.http import HttpResponseClientRedirect

from apps.portal.selectors import current_project
from apps.tenants.selectors import is_cloud_admin, role_can_write, role_on_project


def _login_redirect(request):
    """To the login page, and back here afterwards. An htmx request (a poll whose session has
    expired) gets HX-Redirect, so the whole page goes to the login page, not just a fragment."""
    login_url = reverse(settings.LOGIN_URL)
    if request.htmx:
        # Come back to the page the fragment belongs to, not to the fragment.
        current = urlsplit(request.htmx.current_url or "")
        back = current.path + (f"?{current.query}" if current.query else "") if current.path else "/"
        return HttpResponseClientRedirect(f"{login_url}?{urlencode({'next': back}, safe='/')}")
    return redirect_to_login(request.get_full_path(), login_url)


def portal_view(view=None, *, write: bool = False):
    """Login required; the view gets `project` (the current project) as a keyword argument, and
    the request gets `portal_project` and `portal_can_write`. Without a project the user sees a
    page that says so. With `write=True`, a reader is refused with a message (GET and POST)."""

    def decorate(view_func):
        @wraps(view_func)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return _login_redirect(request)
            project = current_project(request=request)
            if project is None:
                return render(request, "portal/no_project.html", status=403)
            request.portal_project = project
            request.portal_can_write = role_can_write(role_on_project(user=request.user, project=project))
            if write and not request.portal_can_write:
                messages.error(request, f"Your role on project {project.name} allows viewing only.")
                if request.htmx:
                    return HttpResponseClientRedirect(reverse("instances:list"))
                return redirect("instances:list")
            return view_func(request, *args, project=project, **kwargs)

        return wrapped

    return decorate(view) if view is not None else decorate


def admin_view(view_func):
    """Login required, and for cloud admins only: anyone else gets a page that says so (403).
    The identity pages (projects, users, role assignments) act on the whole cloud, not in the
    current project, so no project is needed."""

    @wraps(view_func)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return _login_redirect(request)
        if not is_cloud_admin(user=request.user):
            return render(request, "portal/forbidden.html", status=403)
        return view_func(request, *args, **kwargs)

    return wrapped
