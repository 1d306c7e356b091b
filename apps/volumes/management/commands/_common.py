"""What the volume commands share: the acting user and project (as the instance commands),
finding a volume, snapshot or backup by name or id, and waiting for an agent to finish."""

import time

from django.core.management.base import CommandError

from apps.instances.management.commands._common import actor, add_actor_arguments, find
from apps.volumes import selectors

__all__ = ["actor", "add_actor_arguments", "add_wait_arguments", "find", "wait"]


def add_wait_arguments(parser) -> None:
    parser.add_argument("--wait", action="store_true", help="wait until the storage (or compute) host is done")
    parser.add_argument("--timeout", type=int, default=300, help="seconds to --wait (default 300)")


def wait(reload, busy: tuple[str, ...], options) -> object:
    """Reload the object until its status is not one of ``busy`` (None: it is gone)."""
    obj = reload()
    deadline = time.monotonic() + options["timeout"]
    while obj is not None and obj.status in busy and time.monotonic() < deadline:
        time.sleep(0.5)
        obj = reload()
    if obj is not None and obj.status in busy:
        raise CommandError(f"timed out: still {obj.status}")
    if obj is not None and obj.status.startswith("error"):
        reason = selectors.message_latest(resource_uuid=obj.pk)
        raise CommandError(f"{obj.status}" + (f": {reason.user_message}" if reason else ""))
    return obj
