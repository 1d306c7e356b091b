"""Display helpers for the portal's image pages."""

from django import template

register = template.Library()

_BADGE = {
    "active": "text-bg-success",
    "queued": "text-bg-secondary",
    "saving": "text-bg-info",
    "uploading": "text-bg-info",
    "importing": "text-bg-info",
    "deactivated": "text-bg-warning",
    "killed": "text-bg-danger",
}


@register.inclusion_tag("portal/_status_badge.html")
def image_status_badge(image):
    return {
        "status": image.status,
        "css": _BADGE.get(image.status, "text-bg-light"),
        "busy": image.status in ("saving", "uploading", "importing"),
    }
