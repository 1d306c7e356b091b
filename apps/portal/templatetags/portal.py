"""Small display helpers for the portal's templates."""

import re

from django import template

from apps.instances.states import api_status

register = template.Library()

_BADGE = {
    "BUILD": "text-bg-info",
    "ACTIVE": "text-bg-success",
    "SHUTOFF": "text-bg-secondary",
    "ERROR": "text-bg-danger",
    "DELETED": "text-bg-dark",
    "PAUSED": "text-bg-warning",
    "SUSPENDED": "text-bg-warning",
    "VERIFY_RESIZE": "text-bg-primary",
    "RESCUE": "text-bg-warning",
    "SHELVED_OFFLOADED": "text-bg-secondary",
    "REBOOT": "text-bg-info",
    "HARD_REBOOT": "text-bg-info",
    "REBUILD": "text-bg-info",
    "RESIZE": "text-bg-info",
    "REVERT_RESIZE": "text-bg-info",
}


@register.filter
def instance_status(instance) -> str:
    """The API status of an instance, as Nova shows it (ACTIVE, SHUTOFF, REBOOT, VERIFY_RESIZE ...)."""
    return api_status(instance.vm_state, instance.task_state)


@register.inclusion_tag("portal/_status_badge.html")
def status_badge(instance):
    status = api_status(instance.vm_state, instance.task_state)
    return {
        "status": status,
        "css": _BADGE.get(status, "text-bg-light"),
        "busy": bool(instance.task_state),
        "task_state": instance.task_state,
    }


# Terminal control sequences (colours, cursor moves) and carriage returns in a serial console.
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@register.filter
def console_text(output: str) -> str:
    """A console log as plain text: without escape sequences and stray control characters
    (still escaped by the template, as any text that comes from a guest)."""
    return _CONTROL.sub("", _ANSI.sub("", output.replace("\r\n", "\n").replace("\r", "\n")))


_QUOTA_LABELS = {
    "instances": "Instances",
    "cores": "vCPUs",
    "ram": "RAM (MiB)",
    "volumes": "Volumes",
    "gigabytes": "Volume storage (GB)",
    "snapshots": "Volume snapshots",
    "backups": "Volume backups",
    "networks": "Networks",
    "ports": "Ports",
    "floating_ips": "Floating IPs",
    "security_groups": "Security groups",
}


@register.filter
def quota_label(resource: str) -> str:
    """A quota's resource as people say it, with its unit."""
    return _QUOTA_LABELS.get(resource, resource.replace("_", " ").capitalize())
