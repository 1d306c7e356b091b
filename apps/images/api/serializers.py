"""Glance v2 request parsing and response bodies.

Glance's image is flat: the base attributes and the free-form properties side by side, with
`self`, `file` and `schema` links relative to the API root (`/v2/...`).
"""

from __future__ import annotations

from urllib.parse import urlencode

from apps.images.models import ContainerFormat, DiskFormat, Image, ImageMember, ImageStatus, MemberStatus
from apps.images.selectors import DEFAULT_LIMIT, MAX_LIMIT, SORT_KEYS, ImageQuery
from apps.images.services import PatchOp
from cloudmgr.api.pagination import query_flag
from cloudmgr.exceptions import ValidationError

PATCH_V21 = "application/openstack-images-v2.1-json-patch"
PATCH_V20 = "application/openstack-images-v2.0-json-patch"


def _time(value) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def image_body(image: Image) -> dict:
    body = {key: value for key, value in (image.properties or {}).items()}
    image_id = str(image.id)
    body.update(
        {
            "id": image_id,
            "name": image.name or None,
            "status": image.status,
            "visibility": image.visibility,
            "protected": image.protected,
            "os_hidden": image.os_hidden,
            "checksum": image.checksum or None,
            "os_hash_algo": image.os_hash_algo or None,
            "os_hash_value": image.os_hash_value or None,
            "owner": image.project_id.hex,
            "size": image.size,
            "virtual_size": image.virtual_size,
            "min_ram": image.min_ram,
            "min_disk": image.min_disk,
            "disk_format": image.disk_format or None,
            "container_format": image.container_format or None,
            "created_at": _time(image.created_at),
            "updated_at": _time(image.updated_at),
            "tags": sorted(tag.value for tag in image.tag_set.all()),
            "self": f"/v2/images/{image_id}",
            "file": f"/v2/images/{image_id}/file",
            "schema": "/v2/schemas/image",
        }
    )
    return body


def member_body(member: ImageMember) -> dict:
    return {
        "image_id": str(member.image_id),
        "member_id": member.project_id.hex,
        "status": member.status,
        "created_at": _time(member.created_at),
        "updated_at": _time(member.updated_at),
        "schema": "/v2/schemas/member",
    }


def _int_param(params, name: str, minimum: int = 0) -> int | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{name} param must be an integer") from None
    if value < minimum:
        raise ValidationError(f"{name} param must be positive")
    return value


def _sort(params) -> tuple[tuple[str, str], ...]:
    if "sort" in params:  # the new syntax: sort=name:asc,created_at
        pairs = []
        for item in params.get("sort", "").split(","):
            key, _, direction = item.strip().partition(":")
            pairs.append((key, direction or "desc"))
    else:
        keys = params.getlist("sort_key") or ["created_at"]
        dirs = params.getlist("sort_dir") or ["desc"]
        if len(dirs) not in (1, len(keys)):
            raise ValidationError("Number of sort dirs does not match the number of sort keys")
        pairs = [(key, dirs[i] if len(dirs) > 1 else dirs[0]) for i, key in enumerate(keys)]
    for key, direction in pairs:
        if key not in SORT_KEYS:
            raise ValidationError(f"Invalid sort key: {key}. Use one of {', '.join(sorted(SORT_KEYS))}.")
        if direction not in ("asc", "desc"):
            raise ValidationError(f"Invalid sort direction: {direction}")
    return tuple(pairs)


def image_query(params) -> tuple[str | None, str | None, ImageQuery]:
    """(visibility, member_status, the rest) from the list's query string."""
    status = params.get("status")
    if status is not None and status not in ImageStatus.values:
        raise ValidationError(f"Invalid status value: {status}")
    limit = _int_param(params, "limit")
    query = ImageQuery(
        name=params.get("name"),
        status=status,
        owner=params.get("owner"),
        tags=tuple(params.getlist("tag")),
        os_hidden=bool(query_flag(params, "os_hidden")),
        protected=query_flag(params, "protected"),
        disk_format=params.get("disk_format"),
        container_format=params.get("container_format"),
        size_min=_int_param(params, "size_min"),
        size_max=_int_param(params, "size_max"),
        sort=_sort(params),
        limit=min(limit if limit is not None else DEFAULT_LIMIT, MAX_LIMIT),
        marker=params.get("marker"),
    )
    return params.get("visibility"), params.get("member_status"), query


def list_links(params, next_marker: str | None) -> dict:
    """Glance's `first`, `next` and `schema` keys, relative to the API root."""
    rest = [(k, v) for k, values in params.lists() for v in values if k != "marker"]
    links = {"first": "/v2/images" + (f"?{urlencode(rest)}" if rest else ""), "schema": "/v2/schemas/images"}
    if next_marker is not None:
        links["next"] = "/v2/images?" + urlencode([*rest, ("marker", next_marker)])
    return links


def _unescape(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")


def parse_patch(data, content_type: str) -> list[PatchOp]:
    """Glance's two JSON Patch dialects: v2.1 (RFC 6902: {"op", "path", "value"}) and v2.0
    (the older draft: {"replace": "/name", "value": ...})."""
    if not isinstance(data, list):
        raise ValidationError("Request body must be a JSON array of operation objects.")
    changes = []
    for raw in data:
        if not isinstance(raw, dict):
            raise ValidationError("Operations must be JSON objects.")
        if content_type.startswith(PATCH_V20):
            ops = [name for name in ("add", "remove", "replace") if name in raw]
            if len(ops) != 1:
                raise ValidationError('Operation objects must contain exactly one of "add", "remove" or "replace".')
            op, path = ops[0], raw[ops[0]]
        else:
            op, path = raw.get("op"), raw.get("path")
            if op not in ("add", "remove", "replace"):
                raise ValidationError(f"Invalid operation: {op!r}. Use add, remove or replace.")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValidationError(f"Invalid JSON pointer for this resource: {path!r}")
        segments = path[1:].split("/")
        if len(segments) != 1 or not segments[0]:
            raise ValidationError(f"Nested paths are not allowed: {path}")
        if op != "remove" and "value" not in raw:
            raise ValidationError('Operation objects must contain a "value" member.')
        changes.append(PatchOp(op=op, key=_unescape(segments[0]), value=raw.get("value")))
    return changes


def import_body(data) -> tuple[str, str | None]:
    """(method name, uri) from an import request."""
    method = data.get("method") if isinstance(data, dict) else None
    if not isinstance(method, dict) or not isinstance(method.get("name"), str):
        raise ValidationError('The import request needs a "method" object with a "name".')
    return method["name"], method.get("uri")


# --- schemas (GET /v2/schemas/...) ------------------------------------------------------------

_UUID_PATTERN = "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"


def _image_properties() -> dict:
    return {
        "id": {"type": "string", "description": "An identifier for the image", "pattern": _UUID_PATTERN},
        "name": {"type": ["null", "string"], "description": "Descriptive name for the image", "maxLength": 255},
        "status": {"type": "string", "readOnly": True, "description": "Status of the image",
                   "enum": list(ImageStatus.values)},
        "visibility": {"type": "string", "description": "Scope of image accessibility",
                       "enum": ["community", "public", "private", "shared"]},
        "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
        "os_hidden": {"type": "boolean",
                      "description": "If true, image will not appear in default image list response."},
        "checksum": {"type": ["null", "string"], "readOnly": True, "maxLength": 32,
                     "description": "md5 hash of image contents."},
        "os_hash_algo": {"type": ["null", "string"], "readOnly": True, "maxLength": 64,
                         "description": "Algorithm to calculate the os_hash_value"},
        "os_hash_value": {"type": ["null", "string"], "readOnly": True, "maxLength": 128,
                          "description": "Hexdigest of the image contents using the algorithm in os_hash_algo."},
        "owner": {"type": ["null", "string"], "maxLength": 255, "description": "Owner of the image"},
        "size": {"type": ["null", "integer"], "readOnly": True, "description": "Size of image file in bytes"},
        "virtual_size": {"type": ["null", "integer"], "readOnly": True,
                         "description": "Virtual size of image in bytes"},
        "container_format": {"type": ["null", "string"], "enum": [None, *ContainerFormat.values],
                             "description": "Format of the container"},
        "disk_format": {"type": ["null", "string"], "enum": [None, *DiskFormat.values],
                        "description": "Format of the disk"},
        "created_at": {"type": "string", "readOnly": True, "description": "Date and time of image registration"},
        "updated_at": {"type": "string", "readOnly": True,
                       "description": "Date and time of the last image modification"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 255},
                 "description": "List of strings related to the image"},
        "direct_url": {"type": "string", "readOnly": True,
                       "description": "URL to access the image file kept in external store"},
        "min_ram": {"type": "integer", "description": "Amount of ram (in MB) required to boot image."},
        "min_disk": {"type": "integer", "description": "Amount of disk space (in GB) required to boot image."},
        "self": {"type": "string", "readOnly": True, "description": "An image self url"},
        "file": {"type": "string", "readOnly": True, "description": "An image file url"},
        "schema": {"type": "string", "readOnly": True, "description": "An image schema url"},
        "locations": {"type": "array", "items": {"type": "object"},
                      "description": "A set of URLs to access the image file kept in external store"},
    }


def image_schema() -> dict:
    return {
        "name": "image",
        "properties": _image_properties(),
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def images_schema() -> dict:
    return {
        "name": "images",
        "properties": {
            "images": {"type": "array", "items": image_schema()},
            "schema": {"type": "string"},
            "first": {"type": "string"},
            "next": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def member_schema() -> dict:
    return {
        "name": "member",
        "properties": {
            "created_at": {"type": "string", "description": "Date and time of image member creation"},
            "image_id": {"type": "string", "description": "An identifier for the image", "pattern": _UUID_PATTERN},
            "member_id": {"type": "string", "description": "An identifier for the image member (tenantId)"},
            "status": {"type": "string", "description": "The status of this image member", "enum": MemberStatus.values},
            "updated_at": {"type": "string", "description": "Date and time of last modification of image member"},
            "schema": {"readOnly": True, "type": "string"},
        },
    }


def members_schema() -> dict:
    return {
        "name": "members",
        "properties": {"members": {"type": "array", "items": member_schema()}, "schema": {"type": "string"}},
        "links": [{"rel": "schema", "href": "{schema}"}],
    }
