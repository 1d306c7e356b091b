"""Cinder's statuses, and which statuses each action is allowed from.

A service moves an object into the action's busy status with a compare-and-swap update from one
of the allowed statuses, records it, and only then (on commit) asks an agent to act; the agent's
result moves it on, again by compare-and-swap from the busy status.
"""

from dataclasses import dataclass

from django.db import models


class VolumeStatus(models.TextChoices):
    CREATING = "creating"
    AVAILABLE = "available"
    ATTACHING = "attaching"
    IN_USE = "in-use"
    DETACHING = "detaching"
    EXTENDING = "extending"
    DELETING = "deleting"
    ERROR = "error"
    ERROR_DELETING = "error_deleting"
    ERROR_EXTENDING = "error_extending"
    BACKING_UP = "backing-up"
    RESTORING_BACKUP = "restoring-backup"
    ERROR_RESTORING = "error_restoring"
    AWAITING_TRANSFER = "awaiting-transfer"
    REVERTING = "reverting"


class SnapshotStatus(models.TextChoices):
    CREATING = "creating"
    AVAILABLE = "available"
    BACKING_UP = "backing-up"
    DELETING = "deleting"
    ERROR = "error"
    ERROR_DELETING = "error_deleting"


class BackupStatus(models.TextChoices):
    CREATING = "creating"
    AVAILABLE = "available"
    RESTORING = "restoring"
    DELETING = "deleting"
    ERROR = "error"
    ERROR_DELETING = "error_deleting"


class AttachStatus(models.TextChoices):
    ATTACHING = "attaching"
    ATTACHED = "attached"
    DETACHING = "detaching"
    ERROR_ATTACHING = "error_attaching"
    ERROR_DETACHING = "error_detaching"


@dataclass(frozen=True)
class Transition:
    """``action`` is allowed from ``allowed`` and runs in ``busy`` (None: no status of its own)."""

    action: str
    allowed: tuple[str, ...]
    busy: str | None


V = VolumeStatus

VOLUME_TRANSITIONS = {
    # Cinder's delete: never attached, never with snapshots (unless cascade), never in a transfer.
    "delete": Transition("delete", (V.AVAILABLE, V.ERROR, V.ERROR_RESTORING, V.ERROR_EXTENDING), V.DELETING),
    # An admin's force delete (or a retry of a failed delete) also from these.
    "force_delete": Transition("force_delete", (V.AVAILABLE, V.ERROR, V.ERROR_RESTORING, V.ERROR_EXTENDING,
                                                V.ERROR_DELETING, V.DELETING, V.CREATING, V.EXTENDING,
                                                V.REVERTING, V.RESTORING_BACKUP, V.BACKING_UP), V.DELETING),
    "attach": Transition("attach", (V.AVAILABLE,), V.ATTACHING),
    # A multiattach volume takes another attachment while in use.
    "attach_more": Transition("attach", (V.IN_USE,), V.ATTACHING),
    "detach": Transition("detach", (V.IN_USE,), V.DETACHING),
    "extend": Transition("extend", (V.AVAILABLE,), V.EXTENDING),
    # From microversion 3.42: an attached volume grows too, and its guest sees the new size.
    "extend_in_use": Transition("extend", (V.AVAILABLE, V.IN_USE), V.EXTENDING),
    "snapshot": Transition("snapshot", (V.AVAILABLE,), None),
    "snapshot_force": Transition("snapshot", (V.AVAILABLE, V.IN_USE), None),
    "clone": Transition("clone", (V.AVAILABLE, V.IN_USE), None),
    "backup": Transition("backup", (V.AVAILABLE,), V.BACKING_UP),
    "backup_force": Transition("backup", (V.AVAILABLE, V.IN_USE), V.BACKING_UP),
    "restore": Transition("restore", (V.AVAILABLE,), V.RESTORING_BACKUP),
    "transfer": Transition("transfer", (V.AVAILABLE,), V.AWAITING_TRANSFER),
    "revert": Transition("revert", (V.AVAILABLE,), V.REVERTING),
}

S = SnapshotStatus

SNAPSHOT_TRANSITIONS = {
    "delete": Transition("delete", (S.AVAILABLE, S.ERROR, S.ERROR_DELETING), S.DELETING),
    "force_delete": Transition("force_delete", (S.AVAILABLE, S.ERROR, S.ERROR_DELETING, S.CREATING,
                                                S.DELETING, S.BACKING_UP), S.DELETING),
    "use": Transition("create a volume from", (S.AVAILABLE,), None),
}

B = BackupStatus

BACKUP_TRANSITIONS = {
    "delete": Transition("delete", (B.AVAILABLE, B.ERROR), B.DELETING),
    "force_delete": Transition("force_delete", (B.AVAILABLE, B.ERROR, B.ERROR_DELETING, B.CREATING,
                                                B.RESTORING, B.DELETING), B.DELETING),
    "restore": Transition("restore", (B.AVAILABLE,), B.RESTORING),
}

# What os-reset_status may set (Cinder's admin action).
RESET_VOLUME_STATUSES = tuple(VolumeStatus.values)
RESET_SNAPSHOT_STATUSES = tuple(SnapshotStatus.values)
RESET_BACKUP_STATUSES = (B.AVAILABLE, B.ERROR)

# Statuses in which an agent is working on the object: the portal's rows refresh while any shows.
VOLUME_BUSY = (V.CREATING, V.ATTACHING, V.DETACHING, V.EXTENDING, V.DELETING, V.BACKING_UP,
               V.RESTORING_BACKUP, V.REVERTING)
SNAPSHOT_BUSY = (S.CREATING, S.DELETING, S.BACKING_UP)
BACKUP_BUSY = (B.CREATING, B.RESTORING, B.DELETING)
