"""Cinder v3 under /volume/v3/{project_id}/, and Nova's os-volume_attachments on servers.

Each view parses the body, finds the objects through the selectors (scoped to the token's
project), calls one service and renders Cinder's body at the request's microversion
(``OpenStack-API-Version: volume 3.N``, 3.0 without the header). Errors are Cinder's bodies
(Nova's shape: ``{"badRequest": {"code", "message"}}``); a status that forbids an action is a 400
(Cinder's InvalidVolume), an exceeded quota a 413.
"""

from urllib.parse import urlencode

from django.conf import settings
from django.db.models import QuerySet
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.images.selectors import image_get
from apps.instances.api.views import ComputeViewSet
from apps.instances.selectors import instance_get
from apps.instances.states import VmState
from apps.tenants.models import Project
from apps.tenants.selectors import is_cloud_admin
from apps.tenants.services import quota_set
from apps.volumes import filtersets, selectors, services
from apps.volumes.api import serializers as s
from apps.volumes.models import Snapshot, Volume
from cloudmgr.api.errors import error_body, exception_handler
from cloudmgr.api.microversions import MicroversionMixin, Version, supports
from cloudmgr.api.pagination import query_flag
from cloudmgr.api.versions import UPDATED, link, public_url
from cloudmgr.api.viewsets import ProjectScopedViewSet, only_keys
from cloudmgr.exceptions import (
    InvalidState,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    QuotaExceeded,
    ValidationError,
)
from cloudmgr.models import filter_pk

MIN_VERSION = Version(3, 0)
# Every change up to it is honoured (docs/volumes.md): clients use the maximum advertised.
MAX_VERSION = Version(3, 42)
MAX_LIMIT = 1000


def _version_v3() -> dict:
    return {
        "id": "v3.0",
        "status": "CURRENT",
        "version": str(MAX_VERSION),
        "min_version": str(MIN_VERSION),
        "updated": UPDATED,
        "links": [link("describedby", "https://docs.openstack.org/"), link("self", public_url("volume/v3/"))],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}],
    }


class VersionsView(APIView):
    """``GET /volume`` and ``/volume/``: Cinder's 300 with the one version."""

    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request, *args, **kwargs):
        return Response({"versions": [_version_v3()]}, status=status.HTTP_300_MULTIPLE_CHOICES)


class VersionView(APIView):
    """``GET /volume/v3/`` (and the catalog URL ``/volume/v3/{project_id}``): 200."""

    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request, *args, **kwargs):
        return Response({"versions": [_version_v3()]})


def cinder_exception_handler(exc, context):
    """Cinder's status codes on cloudmgr's errors: a status that forbids the action is a 400
    (InvalidVolume ...), an exceeded quota a 413 with ``retryAfter``; a 401 is Keystone's."""
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, InvalidState):
        response.status_code = 400
        response.data = error_body("nova", 400, exc.message)
    elif isinstance(exc, QuotaExceeded):
        response.status_code = 413
        response.data = {"overLimit": {"code": 413, "message": exc.message, "retryAfter": "0"}}
    elif isinstance(exc, PreconditionFailed):
        response.data = {"preconditionFailed": {"code": 412, "message": exc.message}}
    return response


class CinderViewSet(MicroversionMixin, ProjectScopedViewSet):
    error_style = "nova"  # Cinder's fault bodies have Nova's shape
    service_type = "volume"
    min_version = MIN_VERSION
    max_version = MAX_VERSION

    def get_exception_handler(self):
        return cinder_exception_handler

    def dispatch(self, request, *args, **kwargs):
        self.url_project = kwargs.pop("project_id", None)
        return super().dispatch(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # Cinder refuses a URL naming another project than the token's.
        if self.url_project is not None and self.url_project not in (self.project.pk.hex, str(self.project.pk)):
            raise ValidationError("Malformed request url")

    @property
    def admin(self) -> bool:
        return is_cloud_admin(user=self.user)

    @property
    def version(self) -> Version:
        return self.request.api_version

    def _require_admin(self, what: str) -> None:
        if not self.admin:
            raise PermissionDenied(f"Policy doesn't allow {what} to be performed.")

    def _all_projects(self) -> tuple[bool, str | None]:
        params = self.request.query_params
        return bool(query_flag(params, "all_tenants")), params.get("project_id")

    def _filtered(self, filterset, queryset: QuerySet) -> QuerySet:
        return filtersets.apply(filterset, self.request.query_params, queryset, version=self.version,
                                admin=self.admin)

    def _page(self, queryset: QuerySet, collection: str, sort_keys: dict[str, str]) -> tuple[list, dict]:
        """Cinder's paging: ``sort`` (``key:dir,...``) or ``sort_key``/``sort_dir``, newest first by
        default; ``marker`` (an id), ``offset``, ``limit``; a next link when the page is full."""
        params = self.request.query_params
        order = []
        if params.get("sort"):
            pairs = [part.partition(":") for part in params["sort"].split(",") if part.strip()]
            wanted = [(key.strip(), direction.strip() or "desc") for key, _, direction in pairs]
        else:
            keys = [k for k in params.get("sort_key", "").split(",") if k] or ["created_at"]
            dirs = [d for d in params.get("sort_dir", "").split(",") if d] or ["desc"]
            wanted = [(key, dirs[i] if i < len(dirs) else dirs[-1]) for i, key in enumerate(keys)]
        for key, direction in wanted:
            if key not in sort_keys:
                raise ValidationError(f"Invalid input received: Invalid sort key {key}.")
            if direction.lower() not in ("asc", "desc"):
                raise ValidationError(f"Invalid input received: Invalid sort dir {direction}.")
            order.append(("-" if direction.lower() == "desc" else "") + sort_keys[key])
        order.append("-id" if order[-1].startswith("-") else "id")
        try:
            limit = min(int(params.get("limit", MAX_LIMIT)), MAX_LIMIT)
            offset = int(params.get("offset", 0))
        except ValueError:
            raise ValidationError("Invalid input received: limit and offset must be integers.") from None
        if limit < 0 or offset < 0:
            raise ValidationError("Invalid input received: limit and offset must be 0 or more.")
        ids = [str(pk) for pk in queryset.order_by(*order).values_list("pk", flat=True)]
        start = offset
        if marker := params.get("marker"):
            if marker not in ids:
                raise NotFound(f"Marker {marker} could not be found.")
            start = ids.index(marker) + 1 + offset
        chosen = ids[start:start + limit]
        by_id = {str(o.pk): o for o in queryset.filter(pk__in=chosen)} if chosen else {}
        page = [by_id[pk] for pk in chosen if pk in by_id]
        links = {}
        if limit and len(page) == limit and start + limit < len(ids):
            query = {**params.dict(), "marker": page[-1].pk, "limit": limit}
            query.pop("offset", None)
            href = self.request.build_absolute_uri(self.request.path) + "?" + urlencode(query)
            links[f"{collection}_links"] = [link("next", href)]
        return page, links

    def _volume(self, volume_id) -> Volume:
        return selectors.volume_get(user=self.user, project=self.project, volume_id=volume_id)

    def _snapshot(self, snapshot_id) -> Snapshot:
        return selectors.snapshot_get(user=self.user, project=self.project, snapshot_id=snapshot_id)

    def _action_body(self) -> tuple[str, object]:
        data = self.request.data
        if not isinstance(data, dict) or len(data) != 1:
            raise ValidationError("The action body must be a JSON object with exactly one action.")
        ((name, args),) = data.items()
        return name, args


def _args(args, what: str) -> dict:
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise ValidationError(f"Invalid input for field/attribute {what}: it must be an object.")
    return args


def _metadata_of(data, key: str = "metadata") -> dict:
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise ValidationError(f"Malformed request body: the body must be a JSON object with a '{key}' object.")
    return data[key]


class _MetadataMixin:
    """``/{collection}/{id}/metadata`` (and ``/{key}``) of volumes and snapshots: the view says
    where the object comes from (``_metadata_object``) and which service changes it
    (``metadata_service(obj, metadata=, replace=, delete_key=)``)."""

    def metadata_list(self, request, pk):
        return Response({"metadata": dict(self._metadata_object(pk).metadata or {})})

    def metadata_create(self, request, pk):  # POST: merge
        obj = self._metadata_object(pk)
        return Response({"metadata": self.metadata_service(obj, metadata=_metadata_of(request.data))})

    def metadata_replace(self, request, pk):  # PUT: replace all
        obj = self._metadata_object(pk)
        meta = self.metadata_service(obj, metadata=_metadata_of(request.data), replace=True)
        return Response({"metadata": meta})

    def metadata_show(self, request, pk, key):
        meta = self._metadata_object(pk).metadata or {}
        if key not in meta:
            raise NotFound(f"Metadata item was not found: {key}")
        return Response({"meta": {key: meta[key]}})

    def metadata_update_item(self, request, pk, key):
        item = _metadata_of(request.data, "meta")
        if list(item) != [key]:
            raise ValidationError("Request body and URI mismatch")
        self.metadata_service(self._metadata_object(pk), metadata=item)
        return Response({"meta": item})

    def metadata_delete_item(self, request, pk, key):
        self.metadata_service(self._metadata_object(pk), metadata={}, delete_key=key)
        return Response(status=status.HTTP_200_OK)


# --- volume types -----------------------------------------------------------------------------


class VolumeTypeViewSet(CinderViewSet):
    admin_only = {"create", "update", "destroy", "extra_specs_create", "extra_spec_update", "extra_spec_destroy",
                  "type_action", "access_list"}

    def _type(self, pk):
        return selectors.volume_type_get(user=self.user, project=self.project, name_or_id=pk)

    def list(self, request):
        types = selectors.volume_type_list(user=self.user, project=self.project)
        if self.admin and "is_public" in request.query_params and request.query_params["is_public"].lower() != "none":
            types = types.filter(is_public=bool(query_flag(request.query_params, "is_public")))
        return Response({"volume_types": [s.volume_type_body(t, is_admin=self.admin) for t in types]})

    def retrieve(self, request, pk):
        return Response({"volume_type": s.volume_type_body(self._type(pk), is_admin=self.admin)})

    def create(self, request):
        data = self.body("volume_type")
        only_keys(data, {"name", "description", "os-volume-type-access:is_public", "is_public", "extra_specs"},
                    "volume_type")
        public = data.get("os-volume-type-access:is_public", data.get("is_public", True))
        vtype = services.volume_type_create(name=data.get("name") or "", description=data.get("description") or "",
                                            is_public=s.optional_bool(public, "is_public"),
                                            extra_specs=data.get("extra_specs") or {})
        return Response({"volume_type": s.volume_type_body(vtype, is_admin=True)})

    def update(self, request, pk):
        data = self.body("volume_type")
        only_keys(data, {"name", "description", "is_public"}, "volume_type")
        public = data.get("is_public")
        vtype = services.volume_type_update(vtype=self._type(pk), name=data.get("name"),
                                            description=data.get("description"),
                                            is_public=None if public is None else s.optional_bool(public,
                                                                                                  "is_public"))
        return Response({"volume_type": s.volume_type_body(vtype, is_admin=True)})

    def destroy(self, request, pk):
        services.volume_type_delete(vtype=self._type(pk))
        return Response(status=status.HTTP_202_ACCEPTED)

    def extra_specs_list(self, request, pk):
        body = s.volume_type_body(self._type(pk), is_admin=self.admin)
        return Response({"extra_specs": body["extra_specs"]})

    def extra_specs_create(self, request, pk):
        specs = _metadata_of(request.data, "extra_specs")
        services.volume_type_extra_specs_set(vtype=self._type(pk), specs=specs)
        return Response({"extra_specs": {str(k): str(v) for k, v in specs.items()}})

    def extra_spec_show(self, request, pk, key):
        specs = s.volume_type_body(self._type(pk), is_admin=self.admin)["extra_specs"]
        if key not in specs:
            raise NotFound(f"Volume Type {pk} has no extra specs with key {key}.")
        return Response({key: specs[key]})

    def extra_spec_update(self, request, pk, key):
        data = request.data
        if not isinstance(data, dict) or list(data) != [key]:
            raise ValidationError("Request body and URI mismatch")
        services.volume_type_extra_specs_set(vtype=self._type(pk), specs=data)
        return Response({key: str(data[key])})

    def extra_spec_destroy(self, request, pk, key):
        services.volume_type_extra_spec_delete(vtype=self._type(pk), key=key)
        return Response(status=status.HTTP_202_ACCEPTED)

    def access_list(self, request, pk):
        vtype = self._type(pk)
        if vtype.is_public:
            raise NotFound("Access list not available for public volume types.")
        return Response({"volume_type_access": [{"volume_type_id": str(vtype.pk), "project_id": p.pk.hex}
                                                for p in vtype.projects.all()]})

    def type_action(self, request, pk):
        vtype = self._type(pk)
        name, args = self._action_body()
        if name not in ("addProjectAccess", "removeProjectAccess"):
            raise ValidationError(f"There is no such action: {name}")
        project = filter_pk(Project.objects.all(), str(_args(args, name).get("project", ""))).first()
        if project is None:
            raise NotFound(f"Project {_args(args, name).get('project')} could not be found.")
        if name == "addProjectAccess":
            services.volume_type_access_add(vtype=vtype, project=project)
        else:
            services.volume_type_access_remove(vtype=vtype, project=project)
        return Response(status=status.HTTP_202_ACCEPTED)


# --- volumes ----------------------------------------------------------------------------------

VOLUME_SORT_KEYS = {"id": "id", "name": "name", "display_name": "name", "status": "status", "size": "size",
                    "availability_zone": "availability_zone", "bootable": "bootable", "created_at": "created_at",
                    "updated_at": "updated_at"}
VOLUME_CREATE_KEYS = {"size", "name", "description", "display_name", "display_description", "volume_type",
                      "availability_zone", "metadata", "snapshot_id", "source_volid", "imageRef", "image_id",
                      "consistencygroup_id", "multiattach", "scheduler_hints", "backup_id", "group_id"}


class VolumeViewSet(_MetadataMixin, CinderViewSet):
    action_versions = {"summary": ("3.12", None)}

    def _metadata_object(self, pk):
        return self._volume(pk)

    @staticmethod
    def metadata_service(obj, **kwargs):
        return services.volume_metadata_set(volume=obj, **kwargs)

    # Cinder 3.15: the metadata's ETag, and If-Match on its changes (the lost update problem).
    def _if_match(self) -> list[str] | None:
        header = self.request.META.get("HTTP_IF_MATCH")
        if not header or not supports(self.request, "3.15"):
            return None
        return [tag.strip().strip('"') for tag in header.split(",")]

    def metadata_list(self, request, pk):
        response = super().metadata_list(request, pk)
        if supports(request, "3.15"):
            response["ETag"] = services.metadata_etag(response.data["metadata"])
        return response

    def metadata_create(self, request, pk):
        return Response({"metadata": services.volume_metadata_set(
            volume=self._volume(pk), metadata=_metadata_of(request.data), if_match=self._if_match())})

    def metadata_replace(self, request, pk):
        return Response({"metadata": services.volume_metadata_set(
            volume=self._volume(pk), metadata=_metadata_of(request.data), replace=True, if_match=self._if_match())})

    def _volumes(self):
        all_projects, project_id = self._all_projects()
        volumes = selectors.volume_list(user=self.user, project=self.project, all_projects=all_projects,
                                        project_id=project_id)
        return self._filtered(filtersets.VolumeFilterSet, volumes)

    def list(self, request):
        page, links = self._page(self._volumes(), "volumes", VOLUME_SORT_KEYS)
        return Response({"volumes": [s.volume_summary(v) for v in page], **links})

    def list_detail(self, request):
        page, links = self._page(self._volumes(), "volumes", VOLUME_SORT_KEYS)
        return Response({"volumes": [s.volume_detail(v, version=self.version, is_admin=self.admin) for v in page],
                         **links})

    def summary(self, request):
        body = selectors.volume_summary(volumes=self._volumes())
        if not supports(request, "3.36"):
            body.pop("metadata")
        return Response({"volume-summary": body})

    def retrieve(self, request, pk):
        return Response({"volume": s.volume_detail(self._volume(pk), version=self.version, is_admin=self.admin)})

    def create(self, request):
        data = self.body("volume")
        only_keys(data, VOLUME_CREATE_KEYS, "volume")
        if data.get("multiattach"):
            raise ValidationError("multiattach parameter has been removed. The default behavior is to use "
                                  "multiattach enabled volume types.")
        for unsupported in ("consistencygroup_id", "group_id", "backup_id"):
            if data.get(unsupported):
                raise ValidationError(f"Invalid input received: {unsupported} is not supported at microversion "
                                      f"{self.version}.")
        image = snapshot = source = vtype = None
        image_id = data.get("imageRef") or data.get("image_id")
        if image_id:
            try:
                image = image_get(user=self.user, project=self.project, name_or_id=str(image_id))
            except NotFound:
                raise ValidationError("Invalid image identifier or unable to access requested image.") from None
        if data.get("snapshot_id"):
            snapshot = self._snapshot(data["snapshot_id"])
        if data.get("source_volid"):
            source = self._volume(data["source_volid"])
        if data.get("volume_type"):
            vtype = selectors.volume_type_get(user=self.user, project=self.project, name_or_id=str(data["volume_type"]))
        size = data.get("size")
        if size is not None and not isinstance(size, bool) and isinstance(size, str) and size.strip().isdigit():
            size = int(size)
        if size is None and image is None and snapshot is None and source is None:
            raise ValidationError("Invalid input received: size is required to create an empty volume.")
        volume = services.volume_create(
            user=self.user, project=self.project, size=size, name=data.get("name", data.get("display_name")) or "",
            description=data.get("description", data.get("display_description")) or "", volume_type=vtype,
            image=image, snapshot=snapshot, source_volume=source, metadata=data.get("metadata") or {},
            availability_zone=data.get("availability_zone") or None, request_id=self.request_id,
        )
        volume = self._volume(volume.pk)
        return Response({"volume": s.volume_detail(volume, version=self.version, is_admin=self.admin)},
                        status=status.HTTP_202_ACCEPTED)

    def update(self, request, pk):
        data = self.body("volume")
        only_keys(data, {"name", "description", "display_name", "display_description", "metadata"}, "volume")
        metadata = data.get("metadata")
        volume = services.volume_update(
            volume=self._volume(pk), user=self.user, name=data.get("name", data.get("display_name")),
            description=data.get("description", data.get("display_description")),
            metadata=metadata if metadata is not None else None)
        return Response({"volume": s.volume_detail(self._volume(volume.pk), version=self.version,
                                                   is_admin=self.admin)})

    def destroy(self, request, pk):
        params = request.query_params
        force = bool(query_flag(params, "force")) if supports(request, "3.23") else False
        services.volume_delete(volume=self._volume(pk), user=self.user, cascade=bool(query_flag(params, "cascade")),
                               force=force, request_id=self.request_id)
        return Response(status=status.HTTP_202_ACCEPTED)

    def volume_action(self, request, pk):
        name, args = self._action_body()
        handler = self.ACTIONS.get(name)
        if handler is None:
            raise ValidationError(f"There is no such action: {name}" if name not in self.UNSUPPORTED else
                                  f"The volume action {name} is not supported by this cloud.")
        return handler(self, self._volume(pk), _args(args, name))

    def _extend(self, volume, args):
        new_size = s.optional_int(args.get("new_size"), "new_size")
        if new_size is None:
            raise ValidationError("Invalid input for field/attribute new_size: it is required.")
        services.volume_extend(volume=volume, user=self.user, new_size=new_size, in_use=supports(self.request, "3.42"),
                               request_id=self.request_id)
        return Response(status=status.HTTP_202_ACCEPTED)

    def _reset_status(self, volume, args):
        self._require_admin("volume_extension:volume_admin_actions:reset_status")
        only_keys(args, {"status", "attach_status", "migration_status"}, "os-reset_status")
        services.volume_reset_status(volume=volume, status=args.get("status"), attach_status=args.get("attach_status"),
                                     migration_status=args.get("migration_status"))
        return Response(status=status.HTTP_202_ACCEPTED)

    def _set_bootable(self, volume, args):
        if "bootable" not in args:
            raise ValidationError("Invalid input for field/attribute bootable: it is required.")
        services.volume_set_bootable(volume=volume, bootable=s.optional_bool(args["bootable"], "bootable"))
        return Response(status=status.HTTP_200_OK)

    def _readonly(self, volume, args):
        if "readonly" not in args:
            raise ValidationError("Invalid input for field/attribute readonly: it is required.")
        services.volume_set_read_only(volume=volume, read_only=s.optional_bool(args["readonly"], "readonly"))
        return Response(status=status.HTTP_202_ACCEPTED)

    def _force_delete(self, volume, args):
        self._require_admin("volume_extension:volume_admin_actions:force_delete")
        services.volume_delete(volume=volume, user=self.user, force=True, request_id=self.request_id)
        return Response(status=status.HTTP_202_ACCEPTED)

    def _revert(self, volume, args):
        if not supports(self.request, "3.40"):
            raise ValidationError("There is no such action: revert")
        snapshot_id = args.get("snapshot_id")
        if not snapshot_id:
            raise ValidationError("Invalid input for field/attribute snapshot_id: it is required.")
        services.volume_revert(volume=volume, snapshot=self._snapshot(snapshot_id), user=self.user,
                               request_id=self.request_id)
        return Response(status=status.HTTP_202_ACCEPTED)

    ACTIONS = {
        "os-extend": _extend,
        "os-reset_status": _reset_status,
        "os-set_bootable": _set_bootable,
        "os-update_readonly_flag": _readonly,
        "os-force_delete": _force_delete,
        "revert": _revert,
    }
    # Cinder actions cloudmgr does not offer (attachments go through the attachments API).
    UNSUPPORTED = {"os-retype", "os-migrate_volume", "os-migrate_volume_completion", "os-volume_upload_image",
                   "os-attach", "os-detach", "os-reserve", "os-unreserve", "os-begin_detaching", "os-roll_detaching",
                   "os-initialize_connection", "os-terminate_connection", "os-set_image_metadata",
                   "os-unset_image_metadata", "os-show_image_metadata", "os-unmanage", "os-force_detach"}


# --- snapshots --------------------------------------------------------------------------------

SNAPSHOT_SORT_KEYS = {"id": "id", "status": "status", "size": "size", "volume_id": "volume_id",
                      "created_at": "created_at", "updated_at": "updated_at"}


class SnapshotViewSet(_MetadataMixin, CinderViewSet):
    def _metadata_object(self, pk):
        return self._snapshot(pk)

    @staticmethod
    def metadata_service(obj, **kwargs):
        return services.snapshot_metadata_set(snapshot=obj, **kwargs)

    def _snapshots(self):
        all_projects, project_id = self._all_projects()
        snapshots = selectors.snapshot_list(user=self.user, project=self.project, all_projects=all_projects,
                                            project_id=project_id)
        params = self.request.query_params
        if "metadata" in params and not supports(self.request, "3.22"):  # a metadata filter from 3.22
            params = params.copy()
            params.pop("metadata")
        return filtersets.apply(filtersets.SnapshotFilterSet, params, snapshots, version=self.version,
                                admin=self.admin)

    def _sort_keys(self) -> dict[str, str]:
        keys = dict(SNAPSHOT_SORT_KEYS)
        if supports(self.request, "3.30"):
            keys["name"] = keys["display_name"] = "name"
        return keys

    def list(self, request):
        page, links = self._page(self._snapshots(), "snapshots", self._sort_keys())
        return Response({"snapshots": [s.snapshot_body(x, version=self.version, detail=False) for x in page], **links})

    def list_detail(self, request):
        page, links = self._page(self._snapshots(), "snapshots", self._sort_keys())
        return Response({"snapshots": [s.snapshot_body(x, version=self.version) for x in page], **links})

    def retrieve(self, request, pk):
        return Response({"snapshot": s.snapshot_body(self._snapshot(pk), version=self.version)})

    def create(self, request):
        data = self.body("snapshot")
        only_keys(data, {"volume_id", "force", "name", "description", "display_name", "display_description",
                           "metadata"}, "snapshot")
        if not data.get("volume_id"):
            raise ValidationError("Invalid input for field/attribute volume_id: it is required.")
        snapshot = services.snapshot_create(
            volume=self._volume(data["volume_id"]), user=self.user,
            name=data.get("name", data.get("display_name")) or "",
            description=data.get("description", data.get("display_description")) or "",
            force=s.optional_bool(data.get("force", False), "force"), metadata=data.get("metadata") or {},
            request_id=self.request_id)
        return Response({"snapshot": s.snapshot_body(self._snapshot(snapshot.pk), version=self.version)},
                        status=status.HTTP_202_ACCEPTED)

    def update(self, request, pk):
        data = self.body("snapshot")
        only_keys(data, {"name", "description", "display_name", "display_description"}, "snapshot")
        snapshot = services.snapshot_update(snapshot=self._snapshot(pk),
                                            name=data.get("name", data.get("display_name")),
                                            description=data.get("description", data.get("display_description")))
        return Response({"snapshot": s.snapshot_body(snapshot, version=self.version)})

    def destroy(self, request, pk):
        services.snapshot_delete(snapshot=self._snapshot(pk), user=self.user)
        return Response(status=status.HTTP_202_ACCEPTED)

    def snapshot_action(self, request, pk):
        name, args = self._action_body()
        snapshot = self._snapshot(pk)
        args = _args(args, name)
        if name == "os-reset_status":
            self._require_admin("volume_extension:snapshot_admin_actions:reset_status")
            services.snapshot_reset_status(snapshot=snapshot, status=str(args.get("status") or ""))
        elif name == "os-force_delete":
            self._require_admin("volume_extension:snapshot_admin_actions:force_delete")
            services.snapshot_delete(snapshot=snapshot, user=self.user, force=True)
        else:
            raise ValidationError(f"There is no such action: {name}")
        return Response(status=status.HTTP_202_ACCEPTED)


# --- attachments (3.27) -----------------------------------------------------------------------

ATTACHMENT_SORT_KEYS = {"id": "id", "status": "status", "volume_id": "volume_id", "created_at": "created_at",
                        "updated_at": "updated_at"}
_ATTACHMENTS = ("3.27", None)


class AttachmentViewSet(CinderViewSet):
    action_versions = {name: _ATTACHMENTS for name in ("list", "list_detail", "retrieve", "create", "update",
                                                        "destroy")}

    def _attachment(self, pk):
        return selectors.attachment_get(user=self.user, project=self.project, attachment_id=pk)

    def _attachments(self):
        all_projects, project_id = self._all_projects()
        attachments = selectors.attachment_list(user=self.user, project=self.project, all_projects=all_projects,
                                                project_id=project_id)
        return self._filtered(filtersets.AttachmentFilterSet, attachments)

    def list(self, request):
        page, links = self._page(self._attachments(), "attachments", ATTACHMENT_SORT_KEYS)
        return Response({"attachments": [s.attachment_summary(a) for a in page], **links})

    def list_detail(self, request):
        page, links = self._page(self._attachments(), "attachments", ATTACHMENT_SORT_KEYS)
        return Response({"attachments": [s.attachment_detail(a) for a in page], **links})

    def retrieve(self, request, pk):
        return Response({"attachment": s.attachment_detail(self._attachment(pk))})

    def create(self, request):
        data = self.body("attachment")
        only_keys(data, {"volume_uuid", "instance_uuid", "connector", "mode"}, "attachment")
        if not data.get("volume_uuid"):
            raise ValidationError("Invalid input for field/attribute volume_uuid: it is required.")
        if not data.get("instance_uuid"):
            raise ValidationError("Invalid input received: an attachment needs the instance_uuid of a server "
                                  "(cloudmgr plugs the volume into it).")
        if "mode" in data and not supports(request, "3.54"):
            raise ValidationError("Invalid input received: mode is accepted from microversion 3.54.")
        volume = self._volume(data["volume_uuid"])
        try:
            instance = instance_get(user=self.user, project=self.project, instance_id=str(data["instance_uuid"]))
        except NotFound as exc:
            raise ValidationError(f"Invalid input received: {exc.message}") from None
        attachment = services.volume_attach(volume=volume, instance=instance, user=self.user,
                                            connector=data.get("connector"), request_id=self.request_id)
        return Response({"attachment": s.attachment_detail(self._attachment(attachment.pk))})

    def update(self, request, pk):
        data = self.body("attachment")
        only_keys(data, {"connector"}, "attachment")
        attachment = services.attachment_update(attachment=self._attachment(pk), connector=data.get("connector"))
        return Response({"attachment": s.attachment_detail(attachment)})

    def destroy(self, request, pk):
        attachment = self._attachment(pk)
        services.volume_detach(attachment=attachment, user=self.user, request_id=self.request_id)
        remaining = selectors.attachment_list(user=self.user, project=self.project, all_projects=True).filter(
            volume_id=attachment.volume_id)
        return Response({"attachments": [s.attachment_summary(a) for a in remaining]})


# --- backups ----------------------------------------------------------------------------------

BACKUP_SORT_KEYS = {"id": "id", "status": "status", "size": "size", "volume_id": "volume_uuid",
                    "created_at": "created_at", "updated_at": "updated_at"}


class BackupViewSet(CinderViewSet):
    action_versions = {"update": ("3.9", None)}

    def _backup(self, pk):
        return selectors.backup_get(user=self.user, project=self.project, backup_id=pk)

    def _backups(self):
        all_projects, project_id = self._all_projects()
        backups = selectors.backup_list(user=self.user, project=self.project, all_projects=all_projects,
                                        project_id=project_id).select_related("host")
        return self._filtered(filtersets.BackupFilterSet, backups)

    def _sort_keys(self) -> dict[str, str]:
        keys = dict(BACKUP_SORT_KEYS)
        if supports(self.request, "3.37"):
            keys["name"] = "name"
        return keys

    def list(self, request):
        page, links = self._page(self._backups(), "backups", self._sort_keys())
        return Response({"backups": [s.backup_summary(b) for b in page], **links})

    def list_detail(self, request):
        page, links = self._page(self._backups(), "backups", self._sort_keys())
        return Response({"backups": [s.backup_detail(b, version=self.version) for b in page], **links})

    def retrieve(self, request, pk):
        return Response({"backup": s.backup_detail(self._backup(pk), version=self.version)})

    def create(self, request):
        data = self.body("backup")
        only_keys(data, {"volume_id", "container", "name", "description", "incremental", "force", "snapshot_id",
                           "display_name", "display_description"}, "backup")
        if not data.get("volume_id"):
            raise ValidationError("Invalid input for field/attribute volume_id: it is required.")
        volume = self._volume(data["volume_id"])
        snapshot = self._snapshot(data["snapshot_id"]) if data.get("snapshot_id") else None
        backup = services.backup_create(
            volume=volume, user=self.user, name=data.get("name", data.get("display_name")) or "",
            description=data.get("description", data.get("display_description")) or "",
            incremental=s.optional_bool(data.get("incremental", False), "incremental"),
            force=s.optional_bool(data.get("force", False), "force"), snapshot=snapshot, request_id=self.request_id)
        return Response({"backup": s.backup_summary(backup)}, status=status.HTTP_202_ACCEPTED)

    def update(self, request, pk):
        data = self.body("backup")
        only_keys(data, {"name", "description"}, "backup")
        backup = services.backup_update(backup=self._backup(pk), name=data.get("name"),
                                        description=data.get("description"))
        return Response({"backup": s.backup_summary(backup)})

    def destroy(self, request, pk):
        services.backup_delete(backup=self._backup(pk), user=self.user)
        return Response(status=status.HTTP_202_ACCEPTED)

    def restore(self, request, pk):
        data = self.body("restore")
        only_keys(data, {"volume_id", "name"}, "restore")
        backup = self._backup(pk)
        if data.get("volume_id") and data.get("name"):
            raise ValidationError("Invalid input received: give a volume_id or a name for a new volume, not both.")
        target = self._volume(data["volume_id"]) if data.get("volume_id") else None
        volume = services.backup_restore(backup=backup, user=self.user, project=self.project, volume=target,
                                         name=data.get("name"), request_id=self.request_id)
        return Response({"restore": {"backup_id": str(backup.pk), "volume_id": str(volume.pk),
                                     "volume_name": volume.name}}, status=status.HTTP_202_ACCEPTED)

    def backup_action(self, request, pk):
        name, args = self._action_body()
        backup = self._backup(pk)
        args = _args(args, name)
        if name == "os-reset_status":
            self._require_admin("volume_extension:backup_admin_actions:reset_status")
            services.backup_reset_status(backup=backup, status=str(args.get("status") or ""))
        elif name == "os-force_delete":
            self._require_admin("volume_extension:backup_admin_actions:force_delete")
            services.backup_delete(backup=backup, user=self.user, force=True)
        else:
            raise ValidationError(f"There is no such action: {name}")
        return Response(status=status.HTTP_202_ACCEPTED)


# --- transfers --------------------------------------------------------------------------------


class TransferViewSet(CinderViewSet):
    def _transfer(self, pk):
        return selectors.transfer_get(user=self.user, project=self.project, transfer_id=pk)

    def _transfers(self):
        transfers = selectors.transfer_list(user=self.user, project=self.project,
                                            all_projects=self._all_projects()[0])
        name = self.request.query_params.get("name")
        return transfers.filter(name=name) if name else transfers

    def list(self, request):
        return Response({"transfers": [s.transfer_summary(t) for t in self._transfers()]})

    def list_detail(self, request):
        return Response({"transfers": [s.transfer_detail(t) for t in self._transfers()]})

    def retrieve(self, request, pk):
        return Response({"transfer": s.transfer_detail(self._transfer(pk))})

    def create(self, request):
        data = self.body("transfer")
        only_keys(data, {"volume_id", "name", "no_snapshots"}, "transfer")
        if not data.get("volume_id"):
            raise ValidationError("Invalid input for field/attribute volume_id: it is required.")
        transfer, key = services.transfer_create(volume=self._volume(data["volume_id"]), user=self.user,
                                                 name=data.get("name") or "")
        return Response({"transfer": s.transfer_detail(transfer, auth_key=key)}, status=status.HTTP_202_ACCEPTED)

    def destroy(self, request, pk):
        services.transfer_delete(transfer=self._transfer(pk))
        return Response(status=status.HTTP_202_ACCEPTED)

    def accept(self, request, pk):
        data = self.body("accept")
        if not data.get("auth_key"):
            raise ValidationError("Invalid input for field/attribute auth_key: it is required.")
        transfer = selectors.transfer_for_accept(transfer_id=pk)
        services.transfer_accept(transfer=transfer, auth_key=data["auth_key"], user=self.user, project=self.project)
        return Response({"transfer": s.transfer_summary(transfer)}, status=status.HTTP_202_ACCEPTED)


# --- quotas, limits ---------------------------------------------------------------------------

# Cinder's quota keys that cloudmgr does not limit: fixed (-1 is unlimited).
FIXED_QUOTAS = {"backup_gigabytes": -1, "per_volume_gigabytes": -1, "groups": -1}


def _quota_body(project: Project, *, usage: bool = False, defaults: bool = False) -> dict:
    if defaults:
        rows = {r: (settings.CLOUDMGR_DEFAULT_QUOTAS.get(r, -1), 0) for r in selectors.QUOTA_RESOURCES}
    else:
        rows = selectors.volume_quota_usage(project=project)
    body = {"id": project.pk.hex}
    for resource, (limit, in_use) in rows.items():
        body[resource] = {"limit": limit, "in_use": in_use, "reserved": 0, "allocated": 0} if usage else limit
    for resource, limit in FIXED_QUOTAS.items():
        body[resource] = {"limit": limit, "in_use": 0, "reserved": 0, "allocated": 0} if usage else limit
    return body


class QuotaSetViewSet(CinderViewSet):
    admin_only = {"update", "destroy"}

    def _target(self, pk) -> Project:
        target = filter_pk(Project.objects.all(), pk).first()
        if target is None:
            raise NotFound(f"Project {pk} could not be found.")
        if target.pk != self.project.pk and not self.admin:
            raise PermissionDenied("Policy doesn't allow volume_extension:quotas:show to be performed.")
        return target

    def retrieve(self, request, pk):
        usage = bool(query_flag(request.query_params, "usage"))
        return Response({"quota_set": _quota_body(self._target(pk), usage=usage)})

    def defaults(self, request, pk):
        return Response({"quota_set": _quota_body(self._target(pk), defaults=True)})

    def update(self, request, pk):
        target = self._target(pk)
        data = self.body("quota_set")
        allowed = set(selectors.QUOTA_RESOURCES) | set(FIXED_QUOTAS) | {"tenant_id", "id"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValidationError(f"Bad key(s) in quota set: {', '.join(unknown)}")
        for key, value in data.items():
            if key in selectors.QUOTA_RESOURCES:
                limit = s.optional_int(value, key)
                quota_set(project=target, resource=key, limit=limit)
        body = _quota_body(target)
        body.pop("id")
        return Response({"quota_set": body})

    def destroy(self, request, pk):
        target = self._target(pk)
        for resource in selectors.QUOTA_RESOURCES:
            quota_set(project=target, resource=resource, limit=settings.CLOUDMGR_DEFAULT_QUOTAS.get(resource, -1))
        return Response(status=status.HTTP_200_OK)


class LimitsViewSet(CinderViewSet):
    def retrieve(self, request):
        target = self.project
        if supports(request, "3.39") and request.query_params.get("project_id") and self.admin:
            target = filter_pk(Project.objects.all(), request.query_params["project_id"]).first() or target
        usage = selectors.volume_quota_usage(project=target)
        absolute = {
            "maxTotalVolumes": usage["volumes"][0], "maxTotalSnapshots": usage["snapshots"][0],
            "maxTotalVolumeGigabytes": usage["gigabytes"][0], "maxTotalBackups": usage["backups"][0],
            "maxTotalBackupGigabytes": -1, "totalVolumesUsed": usage["volumes"][1],
            "totalSnapshotsUsed": usage["snapshots"][1], "totalGigabytesUsed": usage["gigabytes"][1],
            "totalBackupsUsed": usage["backups"][1], "totalBackupGigabytesUsed": 0,
        }
        return Response({"limits": {"rate": [], "absolute": absolute}})


# --- messages (3.3), resource filters (3.33), zones, extensions --------------------------------

MESSAGE_SORT_KEYS = {"id": "id", "created_at": "created_at", "event_id": "event_id",
                     "resource_type": "resource_type"}
_MESSAGES = ("3.3", None)


class MessageViewSet(CinderViewSet):
    action_versions = {"list": _MESSAGES, "retrieve": _MESSAGES, "destroy": _MESSAGES}

    def _message(self, pk):
        return selectors.message_get(user=self.user, project=self.project, message_id=pk)

    def list(self, request):
        messages = self._filtered(filtersets.MessageFilterSet, selectors.message_list(
            user=self.user, project=self.project, all_projects=self._all_projects()[0]))
        if supports(request, "3.5"):
            page, links = self._page(messages, "messages", MESSAGE_SORT_KEYS)
        else:
            page, links = list(messages.order_by("-created_at")), {}
        return Response({"messages": [s.message_body(m) for m in page], **links})

    def retrieve(self, request, pk):
        return Response({"message": s.message_body(self._message(pk))})

    def destroy(self, request, pk):
        services.message_delete(message=self._message(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ResourceFiltersViewSet(CinderViewSet):
    action_versions = {"list": ("3.33", None)}

    def list(self, request):
        return Response({"resource_filters": filtersets.resource_filters(request.query_params.get("resource"))})


class AvailabilityZoneViewSet(CinderViewSet):
    def list(self, request):
        host = selectors.storage_host()
        zones = [{"zoneName": host.availability_zone if host else "nova",
                  "zoneState": {"available": bool(host and host.state == "up")}}]
        return Response({"availabilityZoneInfo": zones})


EXTENSIONS = [
    ("os-admin-actions", "AdminActions", "Enable admin actions (reset status, force delete)."),
    ("os-availability-zone", "AvailabilityZones", "Describe availability zones."),
    ("backups", "Backups", "Backups support."),
    ("os-extended-snapshot-attributes", "ExtendedSnapshotAttributes", "Extended snapshot attributes."),
    ("os-quota-sets", "Quotas", "Quota management support."),
    ("os-types-extra-specs", "TypesExtraSpecs", "Type extra specs support."),
    ("os-types-manage", "TypesManage", "Types manage support."),
    ("os-vol-host-attr", "VolumeHostAttribute", "Expose host as an attribute of a volume."),
    ("os-vol-image-meta", "VolumeImageMetadata", "Show image metadata associated with the volume."),
    ("os-vol-tenant-attr", "VolumeTenantAttribute", "Expose the internal project_id as an attribute of a volume."),
    ("os-volume-transfer", "VolumeTransfer", "Volume transfer management support."),
    ("os-volume-type-access", "VolumeTypeAccess", "Volume type access support."),
]


class ExtensionViewSet(CinderViewSet):
    def list(self, request):
        return Response({"extensions": [
            {"alias": alias, "name": name, "description": description, "links": [], "namespace": "",
             "updated": UPDATED} for alias, name, description in EXTENSIONS]})


# --- Nova: os-volume_attachments ---------------------------------------------------------------


def nova_volume_exception_handler(exc, context):
    """Nova answers a volume whose status forbids the attach (Cinder's InvalidVolume) with 400;
    a server whose state forbids it stays a 409."""
    response = exception_handler(exc, context)
    if response is not None and getattr(exc, "invalid_resource", None):
        response.status_code = 400
        response.data = error_body("nova", 400, exc.message)
    return response


class ServerVolumeAttachmentViewSet(ComputeViewSet):
    """``/servers/{id}/os-volume_attachments``: the same attach and detach as Cinder's API."""

    def get_exception_handler(self):
        return nova_volume_exception_handler

    def _server(self, pk):
        return instance_get(user=self.user, project=self.project, instance_id=pk)

    def _changeable(self, request, instance, action: str):
        """A shelved server's volumes change from 2.20 on (Nova); before, its state refuses them."""
        if instance.vm_state == VmState.SHELVED_OFFLOADED and not supports(request, "2.20"):
            raise InvalidState(f"Cannot '{action}' instance {instance.pk} while it is in vm_state "
                               f"{instance.vm_state} (from compute API version 2.20 on it can).")
        return instance

    def list(self, request, pk):
        attachments = selectors.server_attachments(instance=self._server(pk))
        return Response({"volumeAttachments": [s.volume_attachment_nova(a, version=request.api_version)
                                               for a in attachments]})

    def retrieve(self, request, pk, volume_id):
        attachment = selectors.server_attachment_get(instance=self._server(pk), volume_id=volume_id)
        return Response({"volumeAttachment": s.volume_attachment_nova(attachment, version=request.api_version)})

    def create(self, request, pk):
        data = self.body("volumeAttachment")
        only_keys(data, {"volumeId", "device"}, "volumeAttachment")
        if not isinstance(data.get("volumeId"), str):
            raise ValidationError("Invalid input for field/attribute volumeAttachment. 'volumeId' is a required "
                                  "property")
        device = data.get("device")
        if device is not None and not isinstance(device, str):
            raise ValidationError("Invalid input for field/attribute device: it must be a string.")
        instance = self._changeable(request, self._server(pk), "attach_volume")
        try:
            volume = selectors.volume_get(user=self.user, project=self.project, volume_id=data["volumeId"])
        except NotFound:
            raise NotFound(f"Volume {data['volumeId']} could not be found.") from None
        if volume.multiattach and not supports(request, "2.60"):
            raise ValidationError("Multiattach volumes are only supported starting with compute API version 2.60.")
        attachment = services.volume_attach(volume=volume, instance=instance, user=self.user, device=device,
                                            request_id=self.request_id)
        return Response({"volumeAttachment": s.volume_attachment_nova(attachment, version=request.api_version)})

    def destroy(self, request, pk, volume_id):
        instance = self._changeable(request, self._server(pk), "detach_volume")
        attachment = selectors.server_attachment_get(instance=instance, volume_id=volume_id)
        services.volume_detach(attachment=attachment, user=self.user, request_id=self.request_id)
        return Response(status=status.HTTP_202_ACCEPTED)

