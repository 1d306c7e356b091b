"""Abstract base models shared by every app."""

import uuid

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models


class BaseModel(models.Model):
    """A UUID primary key (as OpenStack's ids) and timestamps."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class TenantOwnedModel(BaseModel):
    """Owned by exactly one project; the API's base viewsets scope every query by it."""

    project = models.ForeignKey("tenants.Project", on_delete=models.PROTECT, related_name="+")

    class Meta:
        abstract = True


def filter_pk(queryset: models.QuerySet, value) -> models.QuerySet:
    """The queryset narrowed to this primary key; empty when the value cannot be one (not a UUID)."""
    try:
        return queryset.filter(pk=value)
    except (DjangoValidationError, ValueError):
        return queryset.none()


def first_by_name_or_id(queryset: models.QuerySet, name_or_id: str):
    """What OpenStack clients mean by NAME_OR_ID: a name first, then an id; None if neither."""
    return queryset.filter(name=name_or_id).first() or filter_pk(queryset, name_or_id).first()
