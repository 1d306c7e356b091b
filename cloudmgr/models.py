"""Abstract base models shared by every app."""

import uuid

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
