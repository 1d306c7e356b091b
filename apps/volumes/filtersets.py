"""Cinder's list filters: one value per attribute (``?status=available``), a like filter from
microversion 3.34 (``?name~=web``: contains), ``metadata={"k": "v"}`` dictionaries, and
``bootable`` read strictly from 3.2. From 3.31 a filter the resource does not have is 400 for
users (Cinder's resource_filters); before, it is ignored, as Cinder drops it. Admins may filter on
every listed attribute at every version."""

import ast
import json
import uuid

import django_filters
from django.db.models import Q, QuerySet

from apps.volumes.models import Attachment, Backup, Message, Snapshot, Volume
from cloudmgr.api.microversions import Version, in_span
from cloudmgr.exceptions import ValidationError

# Query parameters of every list that are not filters.
CONTROL_PARAMS = {"limit", "marker", "offset", "sort", "sort_key", "sort_dir", "all_tenants", "project_id",
                  "with_count", "usage", "is_public"}
LIKE_SUFFIX = "~"

_TRUE, _FALSE = {"true", "1", "yes", "y", "on", "t"}, {"false", "0", "no", "n", "off", "f"}


def strict_bool(value: str, name: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValidationError(f"Invalid input received: {name} {value!r} is not a boolean.")


def parse_dict(value: str, name: str) -> dict:
    """``{"k": "v"}`` as JSON, or as the Python literal that cinderclient sends."""
    for parse in (json.loads, ast.literal_eval):
        try:
            parsed = parse(value)
        except (ValueError, SyntaxError, TypeError):
            continue
        if isinstance(parsed, dict):
            return {str(k): str(v) for k, v in parsed.items()}
    raise ValidationError(f"Invalid input received: {name} must be a dictionary, not {value!r}.")


class DictFilter(django_filters.CharFilter):
    """Every key of the dictionary must have its value in the JSON field."""

    def filter(self, qs: QuerySet, value):
        if not value:
            return qs
        for key, item in parse_dict(value, self.field_name).items():
            qs = qs.filter(**{f"{self.field_name}__{key}": item})
        return qs


class FlagFilter(django_filters.CharFilter):
    """``bootable``: strict from 3.2 (the view sets ``strict``); before, any value means true."""

    strict = True

    def filter(self, qs: QuerySet, value):
        if value in (None, ""):
            return qs
        flag = strict_bool(value, self.field_name) if self.strict else True
        return qs.filter(**{self.field_name: flag})


class UUIDFilter(django_filters.CharFilter):
    def filter(self, qs: QuerySet, value):
        if not value:
            return qs
        try:
            return qs.filter(**{self.field_name: uuid.UUID(str(value))})
        except ValueError:
            return qs.none()


class NothingFilter(django_filters.CharFilter):
    """A filter on something cloudmgr never has (volume groups): nothing matches it."""

    def filter(self, qs: QuerySet, value):
        return qs.none() if value else qs


class TypeFilter(django_filters.CharFilter):
    """A volume type by name or id."""

    def filter(self, qs: QuerySet, value):
        if not value:
            return qs
        try:
            by_id = Q(volume_type_id=uuid.UUID(str(value)))
        except ValueError:
            by_id = Q(pk__in=[])
        return qs.filter(Q(volume_type__name=value) | by_id)


def _like(field: str) -> django_filters.CharFilter:
    return django_filters.CharFilter(field_name=field, lookup_expr="icontains")


def _filterset(name: str, model, filters: dict, like: tuple[str, ...]) -> type[django_filters.FilterSet]:
    attrs = dict(filters)
    for key in like:
        attrs[key + LIKE_SUFFIX] = _like(filters[key].field_name)
    meta = type("Meta", (), {"model": model, "fields": []})
    return type(name, (django_filters.FilterSet,), {**attrs, "Meta": meta})


VolumeFilterSet = _filterset("VolumeFilterSet", Volume, {
    "id": UUIDFilter(field_name="id"),
    "name": django_filters.CharFilter(field_name="name"),
    "status": django_filters.CharFilter(field_name="status"),
    "size": django_filters.NumberFilter(field_name="size"),
    "availability_zone": django_filters.CharFilter(field_name="availability_zone"),
    "bootable": FlagFilter(field_name="bootable"),
    "metadata": DictFilter(field_name="metadata"),
    "glance_metadata": DictFilter(field_name="image_metadata"),
    "group_id": NothingFilter(field_name="id"),
    "volume_type": TypeFilter(field_name="volume_type"),
}, like=("name", "status", "availability_zone"))

SnapshotFilterSet = _filterset("SnapshotFilterSet", Snapshot, {
    "id": UUIDFilter(field_name="id"),
    "name": django_filters.CharFilter(field_name="name"),
    "status": django_filters.CharFilter(field_name="status"),
    "volume_id": UUIDFilter(field_name="volume_id"),
    "metadata": DictFilter(field_name="metadata"),
}, like=("name", "status"))

BackupFilterSet = _filterset("BackupFilterSet", Backup, {
    "id": UUIDFilter(field_name="id"),
    "name": django_filters.CharFilter(field_name="name"),
    "status": django_filters.CharFilter(field_name="status"),
    "volume_id": UUIDFilter(field_name="volume_uuid"),
}, like=("name", "status"))

AttachmentFilterSet = _filterset("AttachmentFilterSet", Attachment, {
    "volume_id": UUIDFilter(field_name="volume_id"),
    "instance_id": UUIDFilter(field_name="instance_id"),
    "status": django_filters.CharFilter(field_name="status"),
    "attach_status": django_filters.CharFilter(field_name="status"),
}, like=("status",))

MessageFilterSet = _filterset("MessageFilterSet", Message, {
    "resource_uuid": UUIDFilter(field_name="resource_uuid"),
    "resource_type": django_filters.CharFilter(field_name="resource_type"),
    "event_id": django_filters.CharFilter(field_name="event_id"),
    "request_id": django_filters.CharFilter(field_name="request_id"),
    "message_level": django_filters.CharFilter(field_name="message_level"),
}, like=("event_id",))

# Cinder's resource_filters (GET /resource_filters, 3.33): what users may filter each list on.
RESOURCE_FILTERS = {
    "volume": VolumeFilterSet,
    "snapshot": SnapshotFilterSet,
    "backup": BackupFilterSet,
    "attachment": AttachmentFilterSet,
    "message": MessageFilterSet,
}


def resource_filters(resource: str | None = None) -> list[dict]:
    found = []
    for name, filterset in RESOURCE_FILTERS.items():
        if resource and resource != name:
            continue
        keys = sorted(k for k in filterset.base_filters if not k.endswith(LIKE_SUFFIX))
        found.append({"resource": name, "filters": keys})
    return found


def apply(filterset_class: type[django_filters.FilterSet], params, queryset: QuerySet, *, version: Version,
          admin: bool) -> QuerySet:
    """``queryset`` narrowed by the filters in ``params`` at microversion ``version``."""
    known = set(filterset_class.base_filters)
    if not in_span(version, "3.34"):
        known = {k for k in known if not k.endswith(LIKE_SUFFIX)}
    unknown = sorted(set(params) - CONTROL_PARAMS - known)
    if unknown and in_span(version, "3.31") and not admin:
        raise ValidationError(f"Invalid input received: Invalid filters {', '.join(unknown)} are found in query "
                              "options.")
    data = {k: params.get(k) for k in params if k in known}
    filterset = filterset_class(data=data, queryset=queryset)
    for filter_ in filterset.filters.values():
        if isinstance(filter_, FlagFilter):
            filter_.strict = in_span(version, "3.2")
    if not filterset.is_valid():
        raise ValidationError(f"Invalid input received: {filterset.errors.as_text()}")
    return filterset.qs
