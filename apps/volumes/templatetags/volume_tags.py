"""Display helpers for the portal's volume, snapshot and backup pages."""

from django import template

from apps.volumes.states import BACKUP_BUSY, SNAPSHOT_BUSY, VOLUME_BUSY

register = template.Library()

_BADGE = {
    "available": "text-bg-success",
    "in-use": "text-bg-primary",
    "awaiting-transfer": "text-bg-warning",
}


def _badge(status: str, busy: tuple) -> dict:
    css = _BADGE.get(status, "text-bg-danger" if status.startswith("error") else "text-bg-info")
    return {"status": status, "css": css, "busy": status in busy}


@register.inclusion_tag("portal/_status_badge.html")
def volume_status_badge(volume):
    return _badge(volume.status, VOLUME_BUSY)


@register.inclusion_tag("portal/_status_badge.html")
def snapshot_status_badge(snapshot):
    return _badge(snapshot.status, SNAPSHOT_BUSY)


@register.inclusion_tag("portal/_status_badge.html")
def backup_status_badge(backup):
    return _badge(backup.status, BACKUP_BUSY)
