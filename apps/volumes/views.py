"""The portal's volume, snapshot and backup pages. Each view parses a form, calls one selector
or service, and renders; a service's error becomes a message.

Progress shows by itself: the lists' table bodies and the volume page's overview are htmx
fragments polled every 2 s, so a row goes from ``creating`` (or ``attaching``, ``extending``,
``backing-up`` ...) to its next status in place, with a spinner while an agent works on it. A
fragment whose object is gone answers 286, which stops its polling.
"""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from apps.portal.decorators import portal_view
from apps.volumes import forms, selectors, services
from apps.volumes.states import VOLUME_BUSY, VOLUME_TRANSITIONS, VolumeStatus
from cloudmgr.exceptions import ApplicationError, NotFound


def _request_id(request) -> str:
    return getattr(request, "request_id", "")


# --- volumes ----------------------------------------------------------------------------------


def _volume_rows(request, project) -> dict:
    return {"volumes": selectors.volume_list(user=request.user, project=project)}


@require_GET
@portal_view
def volume_list(request, *, project):
    return render(request, "volumes/volume_list.html", {**_volume_rows(request, project), "tab": "volumes"})


@require_GET
@portal_view
def volume_rows(request, *, project):
    return render(request, "volumes/_volume_rows.html", _volume_rows(request, project))


@require_http_methods(["GET", "POST"])
@portal_view(write=True)
def volume_create(request, *, project):
    initial = {}
    if request.GET.get("snapshot"):
        initial = {"source": "snapshot", "snapshot": request.GET["snapshot"]}
    if request.GET.get("image"):
        initial = {"source": "image", "image": request.GET["image"]}
    form = forms.VolumeCreateForm(request.POST or None, initial=initial, user=request.user, project=project)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            volume = services.volume_create(
                user=request.user, project=project, size=data["size"], name=data["name"],
                description=data["description"], volume_type=data["volume_type"],
                image=data["image"] if data["source"] == "image" else None,
                snapshot=data["snapshot"] if data["source"] == "snapshot" else None, request_id=_request_id(request),
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Volume {volume.name or volume.pk} is being created.")
            return redirect("volumes:detail", volume_id=volume.pk)
    return render(request, "volumes/volume_form.html", {"form": form, "tab": "volumes"})


def _can_attach(volume) -> bool:
    return volume.status in VOLUME_TRANSITIONS["attach"].allowed or (
        volume.multiattach and volume.status == VolumeStatus.IN_USE)


def _overview(request, project, volume) -> dict:
    # The overview is polled; it carries what the action forms beside it depend on (may it be
    # attached now, its status, its size), which the page applies to them as it changes.
    return {
        "volume": volume,
        "attachments": volume.attachments.all(),
        "failure": selectors.message_latest(resource_uuid=volume.pk),
        "busy": volume.status in VOLUME_BUSY,
        "can_attach": _can_attach(volume),
    }


@require_GET
@portal_view
def volume_detail(request, *, project, volume_id):
    try:
        volume = selectors.volume_get(user=request.user, project=project, volume_id=volume_id)
    except NotFound as exc:
        messages.error(request, exc.message)
        return redirect("volumes:list")
    context = _overview(request, project, volume)
    if request.portal_can_write:
        context.update(
            attach_form=forms.AttachForm(user=request.user, project=project),
            extend_form=forms.ExtendForm(initial={"new_size": volume.size + 1}),
            snapshot_form=forms.SnapshotForm(initial={"force": volume.status == VolumeStatus.IN_USE}),
            backup_form=forms.BackupForm(),
        )
    return render(request, "volumes/volume_detail.html", {**context, "tab": "volumes"})


@require_GET
@portal_view
def volume_overview(request, *, project, volume_id):
    try:
        volume = selectors.volume_get(user=request.user, project=project, volume_id=volume_id)
    except NotFound:
        return HttpResponseStopPolling(
            '<div class="alert alert-secondary mb-0" role="status">This volume has been deleted.</div>')
    return render(request, "volumes/_volume_overview.html", _overview(request, project, volume))


def _attach(request, project, volume):
    form = forms.AttachForm(request.POST, user=request.user, project=project)
    if not form.is_valid():
        raise ApplicationError("Choose an instance that is running, paused, shut off or shelved.")
    instance = form.cleaned_data["instance"]
    services.volume_attach(volume=volume, instance=instance, user=request.user, request_id=_request_id(request))
    return f"Volume {volume.name or volume.pk} is being attached to {instance.name}."


def _detach(request, project, volume):
    attachment = selectors.attachment_get(user=request.user, project=project,
                                          attachment_id=request.POST.get("attachment", ""))
    if attachment.volume_id != volume.pk:
        raise NotFound(f"Attachment {attachment.pk} could not be found.")
    services.volume_detach(attachment=attachment, user=request.user, request_id=_request_id(request))
    return f"Volume {volume.name or volume.pk} is being detached from {attachment.instance.name}."


def _extend(request, project, volume):
    form = forms.ExtendForm(request.POST)
    if not form.is_valid():
        raise ApplicationError("Give the new size in GiB.")
    services.volume_extend(volume=volume, user=request.user, new_size=form.cleaned_data["new_size"], in_use=True,
                           request_id=_request_id(request))
    return f"Volume {volume.name or volume.pk} is growing to {form.cleaned_data['new_size']} GiB."


def _snapshot(request, project, volume):
    form = forms.SnapshotForm(request.POST)
    form.is_valid()
    snapshot = services.snapshot_create(volume=volume, user=request.user, name=form.cleaned_data.get("name") or "",
                                        force=bool(form.cleaned_data.get("force")), request_id=_request_id(request))
    return f"Snapshot {snapshot.name or snapshot.pk} of {volume.name or volume.pk} is being made."


def _backup(request, project, volume):
    form = forms.BackupForm(request.POST)
    form.is_valid()
    backup = services.backup_create(volume=volume, user=request.user, name=form.cleaned_data.get("name") or "",
                                    incremental=bool(form.cleaned_data.get("incremental")),
                                    force=volume.status == VolumeStatus.IN_USE, request_id=_request_id(request))
    return f"Backup {backup.name or backup.pk} of {volume.name or volume.pk} is being made."


def _delete(request, project, volume):
    services.volume_delete(volume=volume, user=request.user, request_id=_request_id(request))
    return f"Volume {volume.name or volume.pk} is being deleted."


_ACTIONS = {"attach": _attach, "detach": _detach, "extend": _extend, "snapshot": _snapshot, "backup": _backup,
            "delete": _delete}


@require_POST
@portal_view(write=True)
def volume_action(request, *, project, volume_id, action):
    """One action from the volume page's forms (or the list's Delete); then back to the page."""
    handler = _ACTIONS.get(action)
    try:
        volume = selectors.volume_get(user=request.user, project=project, volume_id=volume_id)
        if handler is None:
            raise NotFound(f"There is no action {action}.")
        messages.success(request, handler(request, project, volume))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    if action == "delete" or request.POST.get("next") == "list":
        return redirect("volumes:list")
    return redirect("volumes:detail", volume_id=volume_id)


# --- snapshots --------------------------------------------------------------------------------


def _snapshot_rows(request, project) -> dict:
    return {"snapshots": selectors.snapshot_list(user=request.user, project=project).order_by("-created_at")}


@require_GET
@portal_view
def snapshot_list(request, *, project):
    return render(request, "volumes/snapshot_list.html", {**_snapshot_rows(request, project), "tab": "snapshots"})


@require_GET
@portal_view
def snapshot_rows(request, *, project):
    return render(request, "volumes/_snapshot_rows.html", _snapshot_rows(request, project))


@require_POST
@portal_view(write=True)
def snapshot_delete(request, *, project, snapshot_id):
    try:
        snapshot = selectors.snapshot_get(user=request.user, project=project, snapshot_id=snapshot_id)
        services.snapshot_delete(snapshot=snapshot, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Snapshot {snapshot.name or snapshot.pk} is being deleted.")
    return redirect("volumes:snapshots")


# --- backups ----------------------------------------------------------------------------------


def _backup_rows(request, project) -> dict:
    return {"backups": selectors.backup_list(user=request.user, project=project).order_by("-created_at")}


@require_GET
@portal_view
def backup_list(request, *, project):
    context = {**_backup_rows(request, project), "tab": "backups"}
    if request.portal_can_write:
        context["restore_form"] = forms.RestoreForm(user=request.user, project=project)
    return render(request, "volumes/backup_list.html", context)


@require_GET
@portal_view
def backup_rows(request, *, project):
    return render(request, "volumes/_backup_rows.html", _backup_rows(request, project))


@require_POST
@portal_view(write=True)
def backup_restore(request, *, project, backup_id):
    form = forms.RestoreForm(request.POST, user=request.user, project=project)
    try:
        backup = selectors.backup_get(user=request.user, project=project, backup_id=backup_id)
        if not form.is_valid():
            raise ApplicationError(" ".join(str(e) for errors in form.errors.values() for e in errors))
        data = form.cleaned_data
        volume = services.backup_restore(backup=backup, user=request.user, project=project,
                                         volume=data["volume"] if data["target"] == "existing" else None,
                                         name=data["name"] or None, request_id=_request_id(request))
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("volumes:backups")
    messages.success(request, f"Backup {backup.name or backup.pk} is being restored into {volume.name or volume.pk}.")
    return redirect("volumes:detail", volume_id=volume.pk)


@require_POST
@portal_view(write=True)
def backup_delete(request, *, project, backup_id):
    try:
        backup = selectors.backup_get(user=request.user, project=project, backup_id=backup_id)
        services.backup_delete(backup=backup, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Backup {backup.name or backup.pk} is being deleted.")
    return redirect("volumes:backups")
