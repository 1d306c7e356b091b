"""Glance v2 over the service layer. Each view parses, calls the selectors/one service, renders.

The data views (upload, stage, download) never touch `request.data`: the body is a stream that
apps/images/uploads.py reads in chunks, and a download is a FileResponse that sends the store's
reader in CHUNK pieces, so memory never grows with an image's size.
"""

from django.http import FileResponse, HttpResponse
from rest_framework import status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.images import selectors, services, tickets
from apps.images.api import serializers as s
from apps.images.api.authentication import ImageTicket, ImageTicketAuthentication, TicketOrProjectRole
from apps.images.uploads import CHUNK, UploadInterrupted, request_body
from cloudmgr.api.authentication import TokenAuthentication
from cloudmgr.api.parsers import JSONParser
from cloudmgr.api.versions import UPDATED, public_url
from cloudmgr.api.viewsets import ProjectScopedViewSet
from cloudmgr.exceptions import ApplicationError, ValidationError

# The Image API versions we answer to (no microversion headers in Glance: informational). 2.6
# brought interoperable import, 2.7 hidden images.
CURRENT = "v2.7"
VERSIONS = ["v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2", "v2.1", "v2.0"]


def _versions() -> list[dict]:
    return [
        {
            "id": version,
            "status": "CURRENT" if version == CURRENT else "SUPPORTED",
            "updated": UPDATED,
            "links": [{"rel": "self", "href": public_url("image/v2/")}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.image-v2+json"}],
        }
        for version in VERSIONS
    ]


class ImageVersionsView(APIView):
    """GET /image/ (and /image/v2/): 300 with the versions, as Glance's version negotiation."""

    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        return Response({"versions": _versions()}, status=status.HTTP_300_MULTIPLE_CHOICES)


class ImageVersionListView(ImageVersionsView):
    """GET /image/versions: 200 with the same document."""

    def get(self, request):
        return Response({"versions": _versions()})


class JsonPatchV21Parser(JSONParser):
    media_type = s.PATCH_V21


class JsonPatchV20Parser(JSONParser):
    media_type = s.PATCH_V20


class AnyAccept(DefaultContentNegotiation):
    """Glance answers JSON whatever the Accept header says (the SDK sends `application/
    octet-stream` with an upload); never 406."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ImageAPIViewSet(ProjectScopedViewSet):
    error_style = "glance"  # Keystone's {"error": {"code", "title", "message"}}: the SDK shows the message
    content_negotiation_class = AnyAccept

    def _image(self, pk):
        return selectors.image_get_by_id(user=self.user, project=self.project, image_id=pk)


class SchemaViewSet(ImageAPIViewSet):
    SCHEMAS = {
        "image": s.image_schema,
        "images": s.images_schema,
        "member": s.member_schema,
        "members": s.members_schema,
    }

    def retrieve(self, request, name):
        schema = self.SCHEMAS.get(name)
        if schema is None:
            return Response(status=status.HTTP_404_NOT_FOUND)
        return Response(schema())


class InfoViewSet(ImageAPIViewSet):
    def import_info(self, request):
        methods = list(services.import_methods())
        info = {"description": "Import methods available.", "type": "array", "value": methods}
        return Response({"import-methods": info})


class ImageViewSet(ImageAPIViewSet):
    parser_classes = [JSONParser, JsonPatchV21Parser, JsonPatchV20Parser]

    def list(self, request):
        visibility, member_status, query = s.image_query(request.query_params)
        page, more = selectors.image_page(
            user=self.user, project=self.project, visibility=visibility, member_status=member_status, query=query
        )
        links = s.list_links(request.query_params, str(page[-1].id) if more and page else None)
        return Response({"images": [s.image_body(image) for image in page], **links})

    def create(self, request):
        if not isinstance(request.data, dict):
            raise ValidationError("The request body must be a JSON object.")
        image = services.image_create(user=self.user, project=self.project, attrs=request.data)
        headers = {
            "Location": public_url(f"image/v2/images/{image.id}"),
            "OpenStack-image-import-methods": ",".join(services.import_methods()),
        }
        return Response(s.image_body(image), status=status.HTTP_201_CREATED, headers=headers)

    def retrieve(self, request, pk):
        return Response(s.image_body(self._image(pk)))

    def partial_update(self, request, pk):
        content_type = request.content_type or ""
        if not content_type.startswith((s.PATCH_V21, s.PATCH_V20)):
            return Response(
                {"error": {"code": 415, "title": "Unsupported Media Type",
                           "message": f"Unsupported Content-Type; use {s.PATCH_V21}."}},
                status=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                headers={"Accept-Patch": f"{s.PATCH_V21}, {s.PATCH_V20}"},
            )
        changes = s.parse_patch(request.data, content_type)
        image = services.image_update(user=self.user, project=self.project, image=self._image(pk), changes=changes)
        return Response(s.image_body(image))

    def destroy(self, request, pk):
        services.image_delete(user=self.user, project=self.project, image=self._image(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    def deactivate(self, request, pk):
        services.image_deactivate(user=self.user, project=self.project, image=self._image(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    def reactivate(self, request, pk):
        services.image_reactivate(user=self.user, project=self.project, image=self._image(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    def tag_add(self, request, pk, tag):
        services.image_tag_add(user=self.user, project=self.project, image=self._image(pk), tag=tag)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def tag_remove(self, request, pk, tag):
        services.image_tag_remove(user=self.user, project=self.project, image=self._image(pk), tag=tag)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def import_(self, request, pk):
        method, uri = s.import_body(request.data)
        services.image_import(user=self.user, project=self.project, image=self._image(pk), method=method, uri=uri)
        return Response(status=status.HTTP_202_ACCEPTED)


def _size_hint(request) -> int | None:
    raw = request.META.get("HTTP_X_OPENSTACK_IMAGE_SIZE") or request.META.get("HTTP_X_IMAGE_META_SIZE")
    try:
        return int(raw) if raw else None
    except ValueError:
        raise ValidationError("Invalid X-OpenStack-Image-Size.") from None


def _check_octet_stream(request) -> None:
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type and content_type != "application/octet-stream":
        raise services.UnsupportedMediaType("Image data must be sent as application/octet-stream.")


class ImageDataViewSet(ImageAPIViewSet):
    """PUT/GET /v2/images/{id}/file and PUT /v2/images/{id}/stage. No parsers: the body is
    streamed, never parsed."""

    authentication_classes = [ImageTicketAuthentication, TokenAuthentication]
    permission_classes = [TicketOrProjectRole]
    parser_classes: list = []

    def upload(self, request, pk):
        return self._receive(request, pk, services.image_upload)

    def stage(self, request, pk):
        return self._receive(request, pk, services.image_stage)

    def _receive(self, request, pk, service):
        body = request_body(request)
        try:
            _check_octet_stream(request)
            if isinstance(request.auth, ImageTicket):  # a compute host uploading a snapshot
                image = selectors.image_for_ticket(ticket=request.auth.key, action=tickets.UPLOAD, image_id=pk)
                services.image_upload(user=None, project=None, image=image, body=body,
                                      size_hint=_size_hint(request), ticket=request.auth.key)
            else:
                service(user=self.user, project=self.project, image=self._image(pk), body=body,
                        size_hint=_size_hint(request))
        except ApplicationError as exc:
            if not isinstance(exc, UploadInterrupted):
                body.drain()
            raise
        return Response(status=status.HTTP_204_NO_CONTENT)

    def download(self, request, pk):
        if isinstance(request.auth, ImageTicket):
            data = selectors.image_data(user=None, project=None, image_id=pk, ticket=request.auth.key)
        else:
            data = selectors.image_data(user=self.user, project=self.project, image_id=pk)
        if data.file is None:
            return HttpResponse(status=status.HTTP_204_NO_CONTENT)
        response = FileResponse(data.file, content_type="application/octet-stream")
        response.block_size = CHUNK  # the store's reader has no fileno (no sendfile): read in large chunks
        response["Content-Length"] = str(data.size)
        if data.checksum:
            response["Content-MD5"] = data.checksum
        return response


class MemberViewSet(ImageAPIViewSet):
    def list(self, request, pk):
        members = selectors.image_member_list(user=self.user, project=self.project, image=self._image(pk))
        return Response({"members": [s.member_body(m) for m in members], "schema": "/v2/schemas/members"})

    def create(self, request, pk):
        data = request.data
        if not isinstance(data, dict) or not isinstance(data.get("member"), str):
            raise ValidationError('The request body must be a JSON object with a "member" (a project id).')
        member = services.image_member_create(
            user=self.user, project=self.project, image=self._image(pk), member_id=data["member"]
        )
        return Response(s.member_body(member))

    def retrieve(self, request, pk, member_id):
        member = selectors.image_member_get(
            user=self.user, project=self.project, image=self._image(pk), member_id=member_id
        )
        return Response(s.member_body(member))

    def update(self, request, pk, member_id):
        data = request.data
        if not isinstance(data, dict) or not isinstance(data.get("status"), str):
            raise ValidationError('The request body must be a JSON object with a "status".')
        member = selectors.image_member_get(
            user=self.user, project=self.project, image=self._image(pk), member_id=member_id
        )
        member = services.image_member_update(
            user=self.user, project=self.project, member=member, status=data["status"]
        )
        return Response(s.member_body(member))

    def destroy(self, request, pk, member_id):
        member = selectors.image_member_get(
            user=self.user, project=self.project, image=self._image(pk), member_id=member_id
        )
        services.image_member_delete(user=self.user, project=self.project, member=member)
        return Response(status=status.HTTP_204_NO_CONTENT)
