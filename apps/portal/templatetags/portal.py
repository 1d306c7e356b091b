"""Small display helpers for the portal's templates."""

from django import template

from apps.instances.states import api_status

register = template.Library()

_BADGE = {
    "BUILD": "text-bg-info",
    "ACTIVE": "text-bg-success",
    "SHUTOFF": "text-bg-secondary",
    "ERROR": "text-bg-danger",
    "DELETED": "text-bg-dark",
}


@register.filter
def instance_status(instance) -> str:
    """The API status of an instance (BUILD, ACTIVE, SHUTOFF, ERROR, DELETED)."""
    return api_status(instance.vm_state)


@register.inclusion_tag("portal/_status_badge.html")
def status_badge(instance):
    status = api_status(instance.vm_state)
    return {
        "status": status,
        "css": _BADGE.get(status, "text-bg-light"),
        "busy": bool(instance.task_state),
        "task_state": instance.task_state,
    }
