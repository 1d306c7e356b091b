"""The portal's image pages. Each view parses input, calls a selector or one service, renders.

An upload from the browser is two requests: the create form is posted (with `Accept:
application/json` by images.js), which records the image and answers where to send the data;
then the file goes as the body of a PUT to `upload/` (XMLHttpRequest, with a progress bar),
streamed into the store by the same service as the API's. Any refusal comes back as JSON
`{"error": message}`, which the page shows.
"""

from django.contrib import messages
from django.http import FileResponse, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.images import selectors, services
from apps.images.forms import ImageCreateForm, ImageEditForm, MemberAddForm
from apps.images.models import ImageStatus, MemberStatus
from apps.images.uploads import CHUNK, UploadInterrupted, request_body
from apps.portal.decorators import portal_view
from apps.portal.forms import form_problems
from apps.tenants.selectors import is_cloud_admin, project_by_name_or_id
from cloudmgr.exceptions import ApplicationError, NotFound

BUSY = (ImageStatus.SAVING, ImageStatus.UPLOADING, ImageStatus.IMPORTING)


def _wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _get(request, project, image_id):
    return selectors.image_get_by_id(user=request.user, project=project, image_id=str(image_id))


def _back(image_id):
    return redirect("images:detail", image_id=image_id)


@require_GET
@portal_view
def image_list(request, *, project):
    tab = request.GET.get("show", "all")
    if tab not in selectors.PORTAL_TABS:
        tab = "all"
    images = selectors.image_portal_list(user=request.user, project=project, tab=tab)
    return render(request, "images/image_list.html", {"images": images, "tab": tab, "tabs": selectors.PORTAL_TABS})


@require_http_methods(["GET", "POST"])
@portal_view(write=True)
def image_create(request, *, project):
    form = ImageCreateForm(request.POST or None, is_admin=is_cloud_admin(user=request.user))
    if request.method == "POST":
        if form.is_valid():
            try:
                if form.cleaned_data["source"] == "url":
                    image = services.image_create_from_url(
                        user=request.user, project=project, attrs=form.attrs(), uri=form.cleaned_data["url"]
                    )
                else:
                    image = services.image_create(user=request.user, project=project, attrs=form.attrs())
            except ApplicationError as exc:
                form.add_error(None, exc.message)
            else:
                detail = reverse("images:detail", args=[image.pk])
                if _wants_json(request):
                    return JsonResponse(
                        {"id": str(image.pk), "upload_url": reverse("images:upload", args=[image.pk]),
                         "detail_url": detail},
                        status=201,
                    )
                if form.cleaned_data["source"] == "url":
                    messages.success(request, f"Image {image.name} is being imported.")
                else:
                    messages.info(request, f"Image {image.name} is recorded; upload its data below.")
                return redirect(detail)
        if _wants_json(request):
            return JsonResponse({"error": form_problems(form)}, status=400)
    return render(request, "images/image_form.html", {"form": form})


@require_http_methods(["PUT"])
@portal_view(write=True)
def image_upload(request, *, project, image_id):
    """The browser's upload: the file is the request body (never a multipart form), streamed."""
    try:
        body = request_body(request)
    except ApplicationError as exc:
        return JsonResponse({"error": exc.message}, status=exc.status_code)
    try:
        image = _get(request, project, image_id)
        services.image_upload(user=request.user, project=project, image=image, body=body)
    except ApplicationError as exc:
        if not isinstance(exc, UploadInterrupted):
            body.drain()
        return JsonResponse({"error": exc.message}, status=exc.status_code)
    messages.success(request, f"Image {image.name or image.pk} is uploaded and active.")
    return HttpResponse(status=204)


@require_GET
@portal_view
def image_detail(request, *, project, image_id):
    try:
        image = _get(request, project, image_id)
    except NotFound as exc:
        messages.error(request, exc.message)
        return redirect("images:list")
    can_modify = request.portal_can_write and selectors.image_can_modify(
        user=request.user, project=project, image=image
    )
    members = (
        selectors.image_member_list(user=request.user, project=project, image=image)
        if image.visibility == "shared" else []
    )
    context = {
        "image": image,
        "can_modify": can_modify,
        "members": members,
        "membership": selectors.image_membership(project=project, image=image),
        "member_form": MemberAddForm(),
        "busy": image.status in BUSY,
    }
    return render(request, "images/image_detail.html", context)


@require_GET
@portal_view
def image_status(request, *, project, image_id):
    """The image page's status card, polled by htmx while data arrives."""
    try:
        image = _get(request, project, image_id)
    except NotFound:
        return HttpResponse('<div class="alert alert-secondary mb-0">This image has been deleted.</div>', status=286)
    response = render(request, "images/_image_status.html", {"image": image, "busy": image.status in BUSY})
    if image.status not in BUSY:
        response["HX-Refresh"] = "true"  # the whole page changes (size, checksum, actions)
    return response


@require_GET
@portal_view
def image_download(request, *, project, image_id):
    try:
        data = selectors.image_data(user=request.user, project=project, image_id=str(image_id))
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("images:list")
    if data.file is None:
        messages.error(request, "This image has no data yet.")
        return _back(image_id)
    response = FileResponse(data.file, as_attachment=True, filename=f"{image_id}.img",
                            content_type="application/octet-stream")
    response.block_size = CHUNK  # the store's reader has no fileno (no sendfile): read in large chunks
    response["Content-MD5"] = data.checksum
    return response


@require_http_methods(["GET", "POST"])
@portal_view(write=True)
def image_edit(request, *, project, image_id):
    try:
        image = _get(request, project, image_id)
    except NotFound as exc:
        messages.error(request, exc.message)
        return redirect("images:list")
    form = ImageEditForm(request.POST or None, image=image, is_admin=is_cloud_admin(user=request.user))
    if request.method == "POST" and form.is_valid():
        try:
            services.image_update(user=request.user, project=project, image=image, changes=form.changes())
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Image {image.name or image.pk} is updated.")
            return _back(image.pk)
    return render(request, "images/image_edit.html", {"form": form, "image": image})


@require_http_methods(["GET", "POST"])
@portal_view(write=True)
def image_delete(request, *, project, image_id):
    """GET: a confirmation page. POST: delete, then back to the list."""
    try:
        image = _get(request, project, image_id)
        if request.method == "GET":
            return render(request, "images/image_confirm_delete.html", {"image": image})
        services.image_delete(user=request.user, project=project, image=image)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("images:list") if isinstance(exc, NotFound) else _back(image_id)
    messages.success(request, f"Image {image.name or image.pk} is deleted.")
    return redirect("images:list")


@require_POST
@portal_view(write=True)
def image_member_add(request, *, project, image_id):
    form = MemberAddForm(request.POST)
    try:
        image = _get(request, project, image_id)
        if not form.is_valid():
            raise services.ValidationError("Name the project to share with.")
        member = project_by_name_or_id(name_or_id=form.cleaned_data["project"].strip())
        services.image_member_create(user=request.user, project=project, image=image, member_id=member.pk.hex)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Image shared with project {member.name}; it can accept it now.")
    return _back(image_id)


@require_POST
@portal_view(write=True)
def image_member_remove(request, *, project, image_id, member_id):
    try:
        image = _get(request, project, image_id)
        member = selectors.image_member_get(user=request.user, project=project, image=image, member_id=member_id.hex)
        services.image_member_delete(user=request.user, project=project, member=member)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Image no longer shared with project {member.project.name}.")
    return _back(image_id)


@require_POST
@portal_view(write=True)
def image_membership(request, *, project, image_id):
    """Accept or reject an image another project shares with this one."""
    status = request.POST.get("status", "")
    try:
        image = _get(request, project, image_id)
        member = selectors.image_member_get(user=request.user, project=project, image=image, member_id=project.pk.hex)
        services.image_member_update(user=request.user, project=project, member=member, status=status)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        verb = {MemberStatus.ACCEPTED: "accepted", MemberStatus.REJECTED: "rejected"}.get(status, "set to pending")
        messages.success(request, f"Image {image.name or image.pk} {verb}.")
    return _back(image_id)


@require_POST
@portal_view(write=True)
def image_activation(request, *, project, image_id):
    action = request.POST.get("action")
    try:
        image = _get(request, project, image_id)
        if action == "deactivate":
            services.image_deactivate(user=request.user, project=project, image=image)
        else:
            services.image_reactivate(user=request.user, project=project, image=image)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return _back(image_id)
