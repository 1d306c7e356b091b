from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from apps.portal.selectors import SESSION_KEY
from apps.tenants.selectors import project_get
from cloudmgr.exceptions import ApplicationError


@login_required
def home(request):
    return redirect("instances:list")


@login_required
@require_POST
def project_switch(request):
    """Act in another of the user's projects from now on (kept in the session)."""
    try:
        project = project_get(user=request.user, name_or_id=request.POST.get("project", ""))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        request.session[SESSION_KEY] = str(project.pk)
        messages.info(request, f"Now working in project {project.name}.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        back = "portal:home"
    return redirect(back)
