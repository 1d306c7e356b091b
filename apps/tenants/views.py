"""The portal's identity pages (the Keystone API is in apps/tenants/api/).

API access, for every user in their current project: the service endpoints, a clouds.yaml and an
openrc to download, and their application credentials (a new one's secret is shown once).

Identity administration, for cloud admins only (`admin_view`): projects (members, quotas), users
(create, enable/disable) and role assignments (grant, revoke).

Each view parses input with a form, calls one selector or service, renders. A secret (a generated
password, an application credential's secret) is rendered in the answer to the POST that made it
and kept nowhere, so it is shown exactly once.
"""

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.portal import selectors as portal_selectors
from apps.portal.decorators import admin_view, portal_view
from apps.tenants import selectors, services
from apps.tenants.forms import (
    ApplicationCredentialCreateForm,
    ApplicationCredentialFileForm,
    ProjectCreateForm,
    QuotaLimitForm,
    RoleGrantForm,
    RoleRevokeForm,
    UserCreateForm,
    UserEnableForm,
)
from cloudmgr.exceptions import ApplicationError, NotFound
from cloudmgr.models import filter_pk


def _download(content: str, filename: str, content_type: str) -> HttpResponse:
    response = HttpResponse(content, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    # Credentials files: never kept by a cache on the way.
    response["Cache-Control"] = "no-store"
    return response


def _back(request, default: str):
    """After a POST: back to the page the form came from (its `next`, if that is on this site),
    where the message shows. An htmx request (a button with hx-confirm) gets HX-Redirect, so the
    whole page goes there."""
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        back = reverse(default)
    return HttpResponseClientRedirect(back) if request.htmx else redirect(back)


def _form_errors(form) -> str:
    return " ".join(str(error) for errors in form.errors.values() for error in errors)


# --- API access (every user, in the current project) ------------------------------------------


def _api_access_context(request, project, form=None) -> dict:
    return {
        "endpoints": portal_selectors.api_endpoints(project=project),
        "credentials": selectors.application_credential_list(user=request.user),
        "form": form or ApplicationCredentialCreateForm(),
        "openrc_filename": portal_selectors.openrc_filename(user=request.user, project=project),
    }


@require_GET
@portal_view
def api_access(request, *, project):
    return render(request, "tenants/api_access.html", _api_access_context(request, project))


@require_GET
@portal_view
def clouds_yaml(request, *, project):
    content = portal_selectors.clouds_yaml(user=request.user, project=project)
    return _download(content, "clouds.yaml", "application/yaml")


@require_GET
@portal_view
def openrc(request, *, project):
    content = portal_selectors.openrc(user=request.user, project=project)
    filename = portal_selectors.openrc_filename(user=request.user, project=project)
    return _download(content, filename, "text/x-shellscript")


@never_cache
@require_http_methods(["GET", "POST"])
@portal_view
def application_credential_create(request, *, project):
    """POST: create, and show the secret once (the answer to this POST is the only place it is
    ever shown). GET: the form is on the API access page."""
    if request.method == "GET":
        return redirect("tenants:api_access")
    form = ApplicationCredentialCreateForm(request.POST)
    if form.is_valid():
        try:
            secret, credential = services.application_credential_create(
                user=request.user,
                project=project,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                expires_at=form.cleaned_data["expires_at"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            context = {"credential": credential, "secret": secret, "project": project}
            return render(request, "tenants/applicationcredential_created.html", context)
    return render(request, "tenants/api_access.html", _api_access_context(request, project, form), status=400)


@require_POST
@portal_view
def application_credential_file(request, *, project, credential_id):
    """The clouds.yaml or openrc of a credential just created, with the secret its page posts back."""
    form = ApplicationCredentialFileForm(request.POST)
    try:
        credential = selectors.application_credential_get(user=request.user, credential_id=credential_id)
    except NotFound as exc:
        messages.error(request, exc.message)
        return redirect("tenants:api_access")
    if not form.is_valid():
        messages.error(request, "That file can only be made on the page that shows the secret.")
        return redirect("tenants:api_access")
    secret = form.cleaned_data["secret"]
    if form.cleaned_data["format"] == "openrc":
        content = portal_selectors.openrc(user=request.user, project=project, credential=credential, secret=secret)
        filename = portal_selectors.openrc_filename(user=request.user, project=project, credential=credential)
        return _download(content, filename, "text/x-shellscript")
    content = portal_selectors.clouds_yaml(user=request.user, project=project, credential=credential, secret=secret)
    return _download(content, "clouds.yaml", "application/yaml")


@require_http_methods(["GET", "POST"])
@portal_view
def application_credential_delete(request, *, project, credential_id):
    """GET: a confirmation page (without JavaScript). POST: delete."""
    try:
        credential = selectors.application_credential_get(user=request.user, credential_id=credential_id)
        if request.method == "GET":
            return render(request, "tenants/applicationcredential_confirm_delete.html", {"credential": credential})
        services.application_credential_delete(user=request.user, credential=credential)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Application credential {credential.name} is deleted.")
    return _back(request, "tenants:api_access")


# --- Projects (cloud admins) ------------------------------------------------------------------


@require_GET
@admin_view
def project_list(request):
    projects = portal_selectors.admin_project_list(viewer=request.user)
    return render(request, "tenants/project_list.html", {"projects": projects})


@require_http_methods(["GET", "POST"])
@admin_view
def project_create(request):
    form = ProjectCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.project_create(
                name=form.cleaned_data["name"], description=form.cleaned_data["description"]
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Project {project.name} is created, with the default quotas.")
            return redirect("tenants:project_detail", project_id=project.pk)
    return render(request, "tenants/project_form.html", {"form": form})


@require_GET
@admin_view
def project_detail(request, *, project_id):
    try:
        project = selectors.project_by_id(project_id=project_id)
    except NotFound as exc:
        messages.error(request, exc.message)
        return redirect("tenants:project_list")
    context = {
        "project": project,
        "assignments": selectors.role_assignment_list(project=project),
        "quotas": selectors.quota_list(project=project),
    }
    return render(request, "tenants/project_detail.html", context)


@require_POST
@admin_view
def quota_update(request, *, project_id):
    """One quota's limit, from its row on the project page."""
    form = QuotaLimitForm(request.POST)
    try:
        project = selectors.project_by_id(project_id=project_id)
        if not form.is_valid():
            messages.error(request, f"The limit was not changed: {_form_errors(form)}")
            return redirect("tenants:project_detail", project_id=project.pk)
        quota = services.quota_set(
            project=project, resource=form.cleaned_data["resource"], limit=form.cleaned_data["limit"]
        )
    except NotFound as exc:
        messages.error(request, exc.message)
        return redirect("tenants:project_list")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        limit = "unlimited" if quota.limit < 0 else quota.limit
        messages.success(request, f"The {quota.resource} quota of {project.name} is now {limit}.")
    return redirect(f"{reverse('tenants:project_detail', kwargs={'project_id': project_id})}#quotas")


# --- Users (cloud admins) ---------------------------------------------------------------------


@require_GET
@admin_view
def user_list(request):
    return render(request, "tenants/user_list.html", {"users": portal_selectors.admin_user_list(viewer=request.user)})


@never_cache
@require_http_methods(["GET", "POST"])
@admin_view
def user_create(request):
    """A new user; a generated password is shown once, in the answer to this POST."""
    form = UserCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        generated = not form.cleaned_data["password"]
        password = form.cleaned_data["password"] or services.generate_password()
        try:
            user = services.user_create(
                username=form.cleaned_data["username"],
                password=password,
                email=form.cleaned_data["email"],
                is_admin=form.cleaned_data["is_admin"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            if generated:
                context = {"created_user": user, "password": password}
                return render(request, "tenants/user_created.html", context)
            messages.success(request, f"User {user.username} is created.")
            return redirect(f"{reverse('tenants:role_list')}?user={user.pk}")
    return render(request, "tenants/user_form.html", {"form": form})


@require_POST
@admin_view
def user_enable(request, *, user_id):
    """Enable or disable a user (a disabled user cannot log in, nor get API tokens)."""
    form = UserEnableForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose enable or disable.")
        return _back(request, "tenants:user_list")
    enabled = form.cleaned_data["enabled"]
    try:
        user = selectors.user_by_id(user_id=user_id)
        services.user_update(user=user, enabled=enabled)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"User {user.username} is {'enabled' if enabled else 'disabled'}.")
    return _back(request, "tenants:user_list")


# --- Role assignments (cloud admins) ---------------------------------------------------------


def _role_list_context(request, form=None) -> dict:
    """Every role assignment, or those of one project or user (`?project=`, `?user=`: ids)."""
    project = filter_pk(selectors.project_list_visible(viewer=request.user), request.GET.get("project") or None).first()
    user = filter_pk(selectors.user_list(viewer=request.user), request.GET.get("user") or None).first()
    initial = {"project": project, "user": user}
    return {
        "assignments": selectors.role_assignment_list(project=project, user=user),
        "filter_project": project,
        "filter_user": user,
        "form": form or RoleGrantForm(viewer=request.user, initial={k: v for k, v in initial.items() if v is not None}),
    }


@require_GET
@admin_view
def role_list(request):
    return render(request, "tenants/role_list.html", _role_list_context(request))


@require_POST
@admin_view
def role_grant(request):
    form = RoleGrantForm(request.POST, viewer=request.user)
    if form.is_valid():
        user, project, role = (form.cleaned_data[k] for k in ("user", "project", "role"))
        try:
            services.role_grant(user=user, project=project, role=role)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"{user.username} is {role} on project {project.name}.")
            return _back(request, "tenants:role_list")
    return render(request, "tenants/role_list.html", _role_list_context(request, form), status=400)


@require_POST
@admin_view
def role_revoke(request):
    form = RoleRevokeForm(request.POST, viewer=request.user)
    if not form.is_valid():
        messages.error(request, f"No role was revoked: {_form_errors(form)}")
        return _back(request, "tenants:role_list")
    user, project, role = (form.cleaned_data[k] for k in ("user", "project", "role"))
    try:
        services.role_revoke(user=user, project=project, role=role)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{user.username} no longer has the {role} role on project {project.name}.")
    return _back(request, "tenants:role_list")
