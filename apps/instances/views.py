"""The portal's instance pages. Each view parses input, calls one selector or service, renders.

Live updates are htmx polls of small fragments: the list's table body (`rows`), the instance
page's overview (`overview`) and its console log (`console`). A fragment whose instance is gone
answers 286, which tells htmx to stop polling it.
"""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from apps.instances import selectors, services
from apps.instances.forms import InstanceLaunchForm
from apps.portal.decorators import portal_view
from cloudmgr.exceptions import ApplicationError, NotFound, ServiceUnavailable

CONSOLE_LINES = 200


def _instances(request, project):
    return selectors.instance_list(user=request.user, project=project)


@require_GET
@portal_view
def instance_list(request, *, project):
    return render(request, "instances/instance_list.html", {"instances": _instances(request, project)})


@require_GET
@portal_view
def instance_rows(request, *, project):
    """The list's table body, polled by htmx."""
    return render(request, "instances/_instance_rows.html", {"instances": _instances(request, project)})


@require_http_methods(["GET", "POST"])
@portal_view(write=True)
def instance_create(request, *, project):
    form = InstanceLaunchForm(request.POST or None, user=request.user, project=project)
    if request.method == "POST" and form.is_valid():
        count = form.cleaned_data.get("count") or 1
        try:
            instances = services.instances_create(
                min_count=count,
                max_count=count,
                user=request.user,
                project=project,
                name=form.cleaned_data["name"],
                flavor=form.cleaned_data["flavor"],
                image=form.cleaned_data["image"],
                key_name=form.cleaned_data.get("key_name") or None,
                user_data=form.cleaned_data.get("user_data") or "",
                request_id=getattr(request, "request_id", ""),
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            if len(instances) > 1:
                messages.success(request, f"{len(instances)} instances are launching.")
                return redirect("instances:list")
            instance = instances[0]
            messages.success(request, f"Instance {instance.name} is launching.")
            return redirect("instances:detail", instance_id=instance.pk)
    return render(request, "instances/instance_form.html", {"form": form})


@require_GET
@portal_view
def instance_detail(request, *, project, instance_id):
    try:
        instance = selectors.instance_get(user=request.user, project=project, instance_id=str(instance_id))
    except NotFound as exc:
        messages.error(request, exc.message)
        return redirect("instances:list")
    return render(
        request,
        "instances/instance_detail.html",
        {"instance": instance, "fault": instance.faults.first(), "console_lines": CONSOLE_LINES,
         "actions": selectors.instance_allowed_actions(instance=instance),
         "action_log": selectors.instance_actions(instance=instance)[:20]},
    )


@require_GET
@portal_view
def instance_overview(request, *, project, instance_id):
    """The instance page's overview card, polled by htmx."""
    try:
        instance = selectors.instance_get(user=request.user, project=project, instance_id=str(instance_id))
    except NotFound:
        return HttpResponseStopPolling(
            '<div class="alert alert-secondary mb-0" role="status">This instance has been deleted.</div>'
        )
    context = {"instance": instance, "fault": instance.faults.first(),
               "actions": selectors.instance_allowed_actions(instance=instance),
               "action_log": selectors.instance_actions(instance=instance)[:20]}
    return render(request, "instances/_instance_overview.html", context)


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
    "lock": services.instance_lock,
    "unlock": services.instance_unlock,
}


@require_GET
@portal_view(write=True)
def instance_vnc(request, *, project, instance_id):
    """Open the noVNC console: a fresh one-time URL each time."""
    try:
        instance = selectors.instance_get(user=request.user, project=project, instance_id=str(instance_id))
        url = services.instance_console_url(instance=instance, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("instances:detail", instance_id=instance_id)
    return redirect(url)


@require_http_methods(["POST"])
@portal_view(write=True)
def instance_action(request, *, project, instance_id, action):
    """One lifecycle action from the action menu; back to the instance page with a message."""
    service = _ACTION_SERVICES.get(action)
    try:
        instance = selectors.instance_get(user=request.user, project=project, instance_id=str(instance_id))
        if service is None:
            raise NotFound(f"There is no action {action}.")
        service(instance=instance, user=request.user, request_id=getattr(request, "request_id", ""))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        label = {k: v for k, v, _ in selectors.PORTAL_ACTIONS}.get(action, action)
        messages.success(request, f"{label}: requested for {instance.name}.")
    target = reverse("instances:detail", kwargs={"instance_id": instance_id})
    return HttpResponseClientRedirect(target) if request.htmx else redirect(target)


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
    if request.htmx and request.htmx.target == "instance-rows":
        context = {"instances": _instances(request, project), "oob_messages": True}
        return render(request, "instances/_instance_rows.html", context)
    if request.htmx:
        return HttpResponseClientRedirect(reverse("instances:list"))
    return redirect("instances:list")
