"""The portal's instance pages. Each view parses input, calls one selector or service, renders.

Live updates are htmx polls of small fragments: the list's table body (`rows`), the instance
page's overview (`overview`, which also refreshes the page's action menu and action log out of
band) and its console log (`console`). A fragment whose instance is gone answers 286, which tells
htmx to stop polling it. An action or a delete answers with the fragment it was sent from (the
table body, or the overview), so the page changes in place.
"""

from datetime import UTC, datetime, time, timedelta
from urllib.parse import parse_qs, urlsplit

from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from apps.instances import selectors, services
from apps.instances.forms import (
    InstanceBackupForm,
    InstanceLaunchForm,
    InstancePasswordForm,
    InstanceSnapshotForm,
    UsagePeriodForm,
)
from apps.instances.states import VmState
from apps.portal.decorators import portal_view
from apps.portal.forms import form_problems
from apps.tenants.selectors import is_cloud_admin
from cloudmgr.exceptions import ApplicationError, NotFound, ServiceUnavailable

CONSOLE_LINES = 200
ACTION_LOG_LENGTH = 20
_ROWS, _OVERVIEW = "instance-rows", "instance-overview"  # the htmx targets that take a fragment


def _rows_context(request, project, **extra) -> dict:
    """The list's rows: each instance with the actions its state allows now."""
    instances = selectors.instance_list(user=request.user, project=project)
    admin = is_cloud_admin(user=request.user)
    rows = [(instance, selectors.instance_allowed_actions(instance=instance, admin=admin)) for instance in instances]
    return {"rows": rows, **extra}


def _overview_context(request, instance, **extra) -> dict:
    return {"instance": instance, "fault": selectors.instance_fault(instance=instance),
            "tags": selectors.instance_tags(instance=instance),
            "actions": selectors.instance_allowed_actions(instance=instance, admin=is_cloud_admin(user=request.user)),
            "action_log": selectors.instance_actions(instance=instance)[:ACTION_LOG_LENGTH], **extra}


@require_GET
@portal_view
def instance_list(request, *, project):
    return render(request, "instances/instance_list.html", _rows_context(request, project))


@require_GET
@portal_view
def instance_rows(request, *, project):
    """The list's table body, polled by htmx."""
    return render(request, "instances/_instance_rows.html", _rows_context(request, project))


def _requested_networks(network):
    """Nova's ``networks`` request: one chosen network, or None to let the service pick."""
    return [{"uuid": str(network.pk)}] if network is not None else None


@require_http_methods(["GET", "POST"])
@portal_view(write=True)
def instance_create(request, *, project):
    form = InstanceLaunchForm(request.POST or None, user=request.user, project=project)
    if request.method == "POST" and form.is_valid():
        count = form.cleaned_data["count"]
        try:
            instances = services.instances_create(
                min_count=count,
                max_count=count,
                user=request.user,
                project=project,
                name=form.cleaned_data["name"],
                flavor=form.cleaned_data["flavor"],
                image=form.cleaned_data["image"],
                key_name=form.cleaned_data["key_name"] or None,
                user_data=form.cleaned_data["user_data"],
                networks=_requested_networks(form.cleaned_data["network"]),
                config_drive=form.cleaned_data["config_drive"],
                description=form.cleaned_data["description"] or None,
                request_id=getattr(request, "request_id", ""),
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            _launch_messages(request, instances)
            if len(instances) > 1:
                return redirect("instances:list")
            return redirect("instances:detail", instance_id=instances[0].pk)
    return render(request, "instances/instance_form.html", {"form": form})


def _launch_messages(request, instances) -> None:
    """As Nova, a launch no host can take is accepted and the instance goes to ERROR at once:
    say so plainly instead of "launching"."""
    failed = [i for i in instances if i.vm_state == VmState.ERROR]
    launching = [i for i in instances if i.vm_state != VmState.ERROR]
    if launching:
        names = ", ".join(i.name for i in launching)
        messages.success(request, f"{len(launching)} instances are launching: {names}." if len(launching) > 1
                         else f"Instance {names} is launching.")
    for instance in failed:
        fault = selectors.instance_fault(instance=instance)
        messages.error(request, f"Instance {instance.name} could not be launched: "
                                f"{fault.message if fault else 'it went to ERROR.'}")


@require_GET
@portal_view
def instance_detail(request, *, project, instance_id):
    try:
        instance = selectors.instance_get(user=request.user, project=project, instance_id=str(instance_id))
    except NotFound as exc:
        messages.error(request, exc.message)
        return redirect("instances:list")
    backup_form = InstanceBackupForm(initial={"name": f"{instance.name}-backup"})
    password_form = InstancePasswordForm() if selectors.instance_guest_agent(instance=instance) else None
    return render(request, "instances/instance_detail.html",
                  _overview_context(request, instance, console_lines=CONSOLE_LINES, password_form=password_form,
                                    snapshot_form=InstanceSnapshotForm(), backup_form=backup_form))


@require_GET
@portal_view
def instance_overview(request, *, project, instance_id):
    """The instance page's overview, polled by htmx (with the menu and action log out of band)."""
    try:
        instance = selectors.instance_get(user=request.user, project=project, instance_id=str(instance_id))
    except NotFound:
        return HttpResponseStopPolling(
            '<div class="alert alert-secondary mb-0" role="status">This instance has been deleted.</div>'
        )
    return render(request, "instances/_instance_overview.html", _overview_context(request, instance, oob=True))


@require_GET
@portal_view
def instance_console(request, *, project, instance_id):
    """The last lines of the serial console, polled by htmx."""
    try:
        instance = selectors.instance_get(user=request.user, project=project, instance_id=str(instance_id))
    except NotFound:
        return HttpResponseStopPolling("This instance has been deleted.")
    output, problem = "", ""
    try:
        output = selectors.instance_console_log(instance=instance, length=CONSOLE_LINES)
    except ServiceUnavailable:
        problem = "The instance's host did not answer; trying again."
    except ApplicationError as exc:
        problem = exc.message
    return render(
        request, "instances/_instance_console.html", {"instance": instance, "output": output, "problem": problem}
    )


_ACTION_SERVICES = {
    "start": services.instance_start,
    "stop": services.instance_stop,
    "reboot": services.instance_reboot,
    "reboot_hard": lambda **kw: services.instance_reboot(hard=True, **kw),
    "pause": services.instance_pause,
    "unpause": services.instance_unpause,
    "suspend": services.instance_suspend,
    "resume": services.instance_resume,
    "confirmResize": services.instance_resize_confirm,
    "rescue": services.instance_rescue,
    "unrescue": services.instance_unrescue,
    "revertResize": services.instance_resize_revert,
    "trigger_crash_dump": services.instance_trigger_crash_dump,
    "shelve": services.instance_shelve,
    "unshelve": services.instance_unshelve,
    "lock": services.instance_lock,
    "unlock": services.instance_unlock,
    "reset_active": lambda **kw: services.instance_reset_state(state=VmState.ACTIVE, **kw),
    "reset_error": lambda **kw: services.instance_reset_state(state=VmState.ERROR, **kw),
}
_ACTION_LABELS = {key: label for key, label, _ in selectors.PORTAL_ACTIONS + selectors.PORTAL_ADMIN_ACTIONS}


def _websocket_url(console_url: str) -> str:
    """The websocket that the console page at ``console_url`` talks to: the console proxy, with
    the one-time token in its path (as noVNC's page computes it)."""
    parts = urlsplit(console_url)
    path = parse_qs(parts.query).get("path", [""])[0]
    return f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}/{path.lstrip('/')}"


@require_GET
@portal_view(write=True)
def instance_vnc(request, *, project, instance_id):
    """Open noVNC's own page in a new window: a fresh one-time URL each time."""
    try:
        instance = selectors.instance_get(user=request.user, project=project, instance_id=str(instance_id))
        url = services.instance_console_url(instance=instance, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("instances:detail", instance_id=instance_id)
    return redirect(url)


@require_GET
@never_cache
@portal_view(write=True)
def instance_vnc_url(request, *, project, instance_id):
    """For the browser console tab: a fresh one-time websocket URL, as JSON (the error as
    ``{"error": ...}`` with the service's status)."""
    try:
        instance = selectors.instance_get(user=request.user, project=project, instance_id=str(instance_id))
        url = services.instance_console_url(instance=instance, user=request.user)
    except ApplicationError as exc:
        return JsonResponse({"error": exc.message}, status=exc.status_code)
    return JsonResponse({"url": url, "websocket": _websocket_url(url)})


def _fragment_answer(request, project, instance_id):
    """After an action or a delete: the fragment the request came from, with the message out of
    band, so the page changes in place; a plain POST goes back to a page."""
    target = request.htmx.target if request.htmx else None
    if target == _ROWS:
        return render(request, "instances/_instance_rows.html",
                      _rows_context(request, project, oob_messages=True))
    if target == _OVERVIEW:
        try:
            instance = selectors.instance_get(user=request.user, project=project, instance_id=str(instance_id))
        except NotFound:
            return HttpResponseClientRedirect(reverse("instances:list"))
        return render(request, "instances/_instance_overview.html",
                      _overview_context(request, instance, oob=True, oob_messages=True))
    return None


@require_POST
@portal_view(write=True)
def instance_action(request, *, project, instance_id, action):
    """One lifecycle action from an action menu (the list's or the instance page's)."""
    service = _ACTION_SERVICES.get(action)
    try:
        instance = selectors.instance_get(user=request.user, project=project, instance_id=str(instance_id))
        if service is None:
            raise NotFound(f"There is no action {action}.")
        service(instance=instance, user=request.user, request_id=getattr(request, "request_id", ""))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{_ACTION_LABELS[action]}: requested for {instance.name}.")
    answer = _fragment_answer(request, project, instance_id)
    if answer is not None:
        return answer
    target = reverse("instances:detail", kwargs={"instance_id": instance_id})
    return HttpResponseClientRedirect(target) if request.htmx else redirect(target)


_IMAGE_FORMS = {"snapshot": InstanceSnapshotForm, "backup": InstanceBackupForm}


@require_POST
@portal_view(write=True)
def instance_image_create(request, *, project, instance_id, kind):
    """The instance page's "Snapshot and backup" tab: a snapshot (createImage) or a backup (createBackup)."""
    target = reverse("instances:detail", kwargs={"instance_id": instance_id}) + "#images"
    form_class = _IMAGE_FORMS.get(kind)
    try:
        instance = selectors.instance_get(user=request.user, project=project, instance_id=str(instance_id))
        if form_class is None:
            raise NotFound(f"There is no image kind {kind}.")
        form = form_class(request.POST)
        if not form.is_valid():
            messages.error(request, f"Nothing was made: {form_problems(form)}")
            return redirect(target)
        data, request_id = form.cleaned_data, getattr(request, "request_id", "")
        if kind == "snapshot":
            image = services.instance_create_image(instance=instance, user=request.user, name=data["name"],
                                                   request_id=request_id)
        else:
            image = services.instance_create_backup(instance=instance, user=request.user, name=data["name"],
                                                    backup_type=data["backup_type"], rotation=data["rotation"],
                                                    request_id=request_id)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Image {image.name} of {instance.name} is being made; it is listed under "
                                  "Images once uploaded.")
    return redirect(target)


@require_POST
@portal_view(write=True)
def instance_change_password(request, *, project, instance_id):
    """The instance page's "Password" tab (images with the QEMU guest agent): changePassword."""
    target = reverse("instances:detail", kwargs={"instance_id": instance_id}) + "#password"
    try:
        instance = selectors.instance_get(user=request.user, project=project, instance_id=str(instance_id))
        form = InstancePasswordForm(request.POST)
        if not form.is_valid():
            messages.error(request, f"The password was not changed: {form_problems(form)}")
            return redirect(target)
        services.instance_change_password(instance=instance, user=request.user,
                                          password=form.cleaned_data["password"],
                                          request_id=getattr(request, "request_id", ""))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"The password of {instance.name}'s admin user was changed.")
    return redirect(target)


@require_http_methods(["GET", "POST"])
@portal_view(write=True)
def instance_delete(request, *, project, instance_id):
    """GET: a confirmation page (for browsers without JavaScript). POST: delete.

    From the list (htmx, target `instance-rows`) the answer is the refreshed table body with the
    message swapped in out of band; from elsewhere, to the list with a message."""
    try:
        instance = selectors.instance_get(user=request.user, project=project, instance_id=str(instance_id))
        if request.method == "GET":
            return render(request, "instances/instance_confirm_delete.html", {"instance": instance})
        services.instance_delete(instance=instance, user=request.user, request_id=getattr(request, "request_id", ""))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Instance {instance.name} is being deleted.")
    if request.htmx and request.htmx.target == _ROWS:
        return _fragment_answer(request, project, instance_id)
    if request.htmx:
        return HttpResponseClientRedirect(reverse("instances:list"))
    return redirect("instances:list")


@require_GET
@portal_view
def instance_usage(request, *, project):
    """What the project's instances used in a period (os-simple-tenant-usage's report): this
    month so far unless the form asks for other days."""
    now = timezone.now()
    today = now.astimezone(UTC).date()
    this_month = {"start": today.replace(day=1), "end": today}
    form = UsagePeriodForm(request.GET if request.GET else None, initial=this_month)
    report = None
    if not form.is_bound or form.is_valid():
        period = form.cleaned_data if form.is_bound else this_month
        first, last = period["start"], period["end"]
        start = datetime.combine(first, time.min, tzinfo=UTC)
        stop = min(datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC), now)
        reports = selectors.usage_report(user=request.user, project=project, start=start, stop=stop,
                                         project_id=str(project.pk))
        report = reports[0] if reports else selectors.ProjectUsage(project.pk.hex, start, stop)
    return render(request, "instances/usage.html", {"form": form, "report": report})
