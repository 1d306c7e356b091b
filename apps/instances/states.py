"""Nova's three-part instance state, and which actions each state allows."""

from dataclasses import dataclass

from django.db import models

from agents import specs


class VmState(models.TextChoices):
    """Stable states (nova/compute/vm_states.py)."""

    BUILDING = "building"
    ACTIVE = "active"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    STOPPED = "stopped"
    RESIZED = "resized"
    RESCUED = "rescued"
    SHELVED_OFFLOADED = "shelved_offloaded"
    ERROR = "error"
    DELETED = "deleted"


class TaskState(models.TextChoices):
    """Transitions in progress (nova/compute/task_states.py)."""

    SCHEDULING = "scheduling"
    SPAWNING = "spawning"
    POWERING_ON = "powering-on"
    POWERING_OFF = "powering-off"
    REBOOTING = "rebooting"
    REBOOTING_HARD = "rebooting_hard"
    PAUSING = "pausing"
    UNPAUSING = "unpausing"
    SUSPENDING = "suspending"
    RESUMING = "resuming"
    RESIZE_MIGRATING = "resize_migrating"
    RESIZE_REVERTING = "resize_reverting"
    RESIZE_CONFIRMING = "resize_confirming"
    REBUILDING = "rebuilding"
    IMAGE_SNAPSHOT = "image_snapshot"
    IMAGE_BACKUP = "image_backup"
    RESCUING = "rescuing"
    UNRESCUING = "unrescuing"
    SHELVING = "shelving"
    UNSHELVING = "unshelving"
    UPDATING_PASSWORD = "updating_password"
    DELETING = "deleting"


class PowerState(models.IntegerChoices):
    """What the hypervisor reports (nova/compute/power_state.py)."""

    NOSTATE = specs.POWER_NOSTATE, "NOSTATE"
    RUNNING = specs.POWER_RUNNING, "Running"
    PAUSED = specs.POWER_PAUSED, "Paused"
    SHUTDOWN = specs.POWER_SHUTDOWN, "Shutdown"
    CRASHED = specs.POWER_CRASHED, "Crashed"
    SUSPENDED = specs.POWER_SUSPENDED, "Suspended"


# The API status of a vm_state (Nova's api/openstack/common.py state map).
_STATUS = {
    VmState.BUILDING: "BUILD",
    VmState.ACTIVE: "ACTIVE",
    VmState.PAUSED: "PAUSED",
    VmState.SUSPENDED: "SUSPENDED",
    VmState.STOPPED: "SHUTOFF",
    VmState.RESIZED: "VERIFY_RESIZE",
    VmState.RESCUED: "RESCUE",
    VmState.SHELVED_OFFLOADED: "SHELVED_OFFLOADED",
    VmState.ERROR: "ERROR",
    VmState.DELETED: "DELETED",
}

# Task states that show through the status (the rest keep the vm_state's status), as Nova.
_TASK_STATUS = {
    (VmState.ACTIVE, TaskState.REBOOTING): "REBOOT",
    (VmState.ACTIVE, TaskState.REBOOTING_HARD): "HARD_REBOOT",
    (VmState.STOPPED, TaskState.REBOOTING_HARD): "HARD_REBOOT",
    (VmState.PAUSED, TaskState.REBOOTING_HARD): "HARD_REBOOT",
    (VmState.SUSPENDED, TaskState.REBOOTING_HARD): "HARD_REBOOT",
    (VmState.ERROR, TaskState.REBOOTING_HARD): "HARD_REBOOT",
    (VmState.ACTIVE, TaskState.REBUILDING): "REBUILD",
    (VmState.STOPPED, TaskState.REBUILDING): "REBUILD",
    (VmState.ERROR, TaskState.REBUILDING): "REBUILD",
    (VmState.ACTIVE, TaskState.RESIZE_MIGRATING): "RESIZE",
    (VmState.STOPPED, TaskState.RESIZE_MIGRATING): "RESIZE",
    (VmState.RESIZED, TaskState.RESIZE_REVERTING): "REVERT_RESIZE",
}


def api_status(vm_state: str, task_state: str | None = None) -> str:
    if task_state:
        status = _TASK_STATUS.get((vm_state, task_state))
        if status:
            return status
    return _STATUS.get(vm_state, "UNKNOWN")


def vm_states_for_status(status: str) -> list[str]:
    return [vm_state for vm_state, name in _STATUS.items() if name == status.upper()]


# Delete is allowed from every state but deleted; a second delete while one runs is a no-op.
DELETE_ALLOWED = [s for s in VmState if s != VmState.DELETED]


@dataclass(frozen=True)
class Transition:
    """One action's allow-list and the states it moves through.

    ``operation`` is the agent operation (None: the action only changes records); ``done`` is the
    vm_state on success (None: decided from the power state the host reports). ``event`` is the
    action event's name where Nova's is not ``compute_<operation>_instance``.
    """

    action: str  # the instance-action name (Nova's)
    allowed: tuple[str, ...]
    task_state: str | None
    operation: str | None
    done: str | None
    event: str = ""

    @property
    def event_name(self) -> str:
        return self.event or f"compute_{self.operation}_instance"


_ANY = tuple(s for s in VmState if s not in (VmState.DELETED, VmState.BUILDING))

TRANSITIONS = {
    "start": Transition("start", (VmState.STOPPED,), TaskState.POWERING_ON, "start", VmState.ACTIVE),
    "stop": Transition("stop", (VmState.ACTIVE, VmState.PAUSED, VmState.SUSPENDED, VmState.ERROR, VmState.RESCUED),
                       TaskState.POWERING_OFF, "stop", VmState.STOPPED),
    "reboot": Transition("reboot", (VmState.ACTIVE,), TaskState.REBOOTING, "reboot", VmState.ACTIVE),
    "reboot_hard": Transition("reboot", (VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.SUSPENDED,
                                         VmState.ERROR), TaskState.REBOOTING_HARD, "reboot", VmState.ACTIVE),
    "pause": Transition("pause", (VmState.ACTIVE,), TaskState.PAUSING, "pause", VmState.PAUSED),
    "unpause": Transition("unpause", (VmState.PAUSED,), TaskState.UNPAUSING, "unpause", VmState.ACTIVE),
    "suspend": Transition("suspend", (VmState.ACTIVE, VmState.PAUSED), TaskState.SUSPENDING, "suspend",
                          VmState.SUSPENDED),
    "resume": Transition("resume", (VmState.SUSPENDED,), TaskState.RESUMING, "resume", VmState.ACTIVE),
    "resize": Transition("resize", (VmState.ACTIVE, VmState.STOPPED), TaskState.RESIZE_MIGRATING, "resize",
                         VmState.RESIZED),
    "confirmResize": Transition("confirmResize", (VmState.RESIZED,), TaskState.RESIZE_CONFIRMING, None, None),
    "revertResize": Transition("revertResize", (VmState.RESIZED,), TaskState.RESIZE_REVERTING, "resize", None),
    "rebuild": Transition("rebuild", (VmState.ACTIVE, VmState.STOPPED, VmState.ERROR), TaskState.REBUILDING,
                          "rebuild", VmState.ACTIVE),
    "rescue": Transition("rescue", (VmState.ACTIVE, VmState.STOPPED, VmState.ERROR), TaskState.RESCUING, "rescue",
                         VmState.RESCUED),
    "unrescue": Transition("unrescue", (VmState.RESCUED,), TaskState.UNRESCUING, "unrescue", VmState.ACTIVE),
    "createImage": Transition("createImage", (VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.SUSPENDED),
                              TaskState.IMAGE_SNAPSHOT, "snapshot", None),
    "createBackup": Transition("createBackup", (VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.SUSPENDED),
                               TaskState.IMAGE_BACKUP, "snapshot", None, event="compute_backup_instance"),
    # Shelve always offloads (Nova's default shelved_offload_time 0): the host stops the guest,
    # uploads its root disk as an image and removes it; unshelve spawns it from that image on the
    # host the scheduler picks. So there is no SHELVED state, and shelveOffload has nothing to do.
    "shelve": Transition("shelve", (VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.SUSPENDED),
                         TaskState.SHELVING, "shelve", VmState.SHELVED_OFFLOADED),
    "unshelve": Transition("unshelve", (VmState.SHELVED_OFFLOADED,), TaskState.UNSHELVING, None, None),
    # Nova's changePassword: the host's guest agent sets it while the caller waits.
    "changePassword": Transition("changePassword", (VmState.ACTIVE,), TaskState.UPDATING_PASSWORD, "set_password",
                                 None, event="compute_set_admin_password"),
    # An NMI, whose effect is the guest's to decide: no task state, the states stay (Nova).
    "trigger_crash_dump": Transition("trigger_crash_dump", (VmState.ACTIVE, VmState.PAUSED, VmState.RESCUED,
                                                            VmState.RESIZED, VmState.ERROR),
                                     None, "trigger_crash_dump", None, event="compute_trigger_crash_dump"),
    "lock": Transition("lock", _ANY + (VmState.BUILDING,), None, None, None),
    "unlock": Transition("unlock", _ANY + (VmState.BUILDING,), None, None, None),
}


def vm_state_for_power(power_state: int) -> str:
    """The stable state a guest's power state means (after a revert, or for the reconciler)."""
    if power_state == PowerState.RUNNING:
        return VmState.ACTIVE
    if power_state == PowerState.PAUSED:
        return VmState.PAUSED
    return VmState.STOPPED
