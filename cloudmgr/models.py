"""Abstract base models, and the database helpers every app shares."""

import re
import uuid

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, connection, models, transaction

from cloudmgr.exceptions import ValidationError

# The largest value of an integer column on every engine (SQLite's are wider, PostgreSQL's are
# not): the bound Nova, Cinder and Neutron put on quotas, flavor sizes and the like.
INT_MAX = 2**31 - 1


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


def checked_regex(label: str, pattern: str) -> str:
    """The pattern, if the database's regex dialect takes it; else a 400 that names the filter.

    On SQLite Django's REGEXP is Python's ``re``; PostgreSQL's ``~`` has its own dialect, which
    refuses some patterns Python takes (``a++``, ``(?P<n>x)``), so it is asked too (in a savepoint:
    a refused pattern must not abort the request's transaction)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValidationError(f"Invalid regular expression for {label}: {exc}") from None
    if connection.vendor == "postgresql":
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT '' ~ %s", [pattern])
        except DataError as exc:
            raise ValidationError(f"Invalid regular expression for {label}: {str(exc).strip()}") from None
    return pattern
