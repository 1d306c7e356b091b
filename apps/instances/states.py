"""Nova's three-part instance state, and which actions each state allows."""

from django.db import models

from agents import specs


class VmState(models.TextChoices):
    """Stable states (nova/compute/vm_states.py)."""

    BUILDING = "building"
    ACTIVE = "active"
    STOPPED = "stopped"
    ERROR = "error"
    DELETED = "deleted"


class TaskState(models.TextChoices):
    """Transitions in progress (nova/compute/task_states.py)."""

    SCHEDULING = "scheduling"
    SPAWNING = "spawning"
    DELETING = "deleting"


class PowerState(models.IntegerChoices):
    """What the hypervisor reports (nova/compute/power_state.py)."""

    NOSTATE = specs.POWER_NOSTATE, "NOSTATE"
    RUNNING = specs.POWER_RUNNING, "Running"
    PAUSED = specs.POWER_PAUSED, "Paused"
    SHUTDOWN = specs.POWER_SHUTDOWN, "Shutdown"
    CRASHED = specs.POWER_CRASHED, "Crashed"
    SUSPENDED = specs.POWER_SUSPENDED, "Suspended"


# The API status of a vm_state (Nova's common.py state map, for the states that exist here).
_STATUS = {
    VmState.BUILDING: "BUILD",
    VmState.ACTIVE: "ACTIVE",
    VmState.STOPPED: "SHUTOFF",
    VmState.ERROR: "ERROR",
    VmState.DELETED: "DELETED",
}


def api_status(vm_state: str) -> str:
    return _STATUS.get(vm_state, "UNKNOWN")


def vm_states_for_status(status: str) -> list[str]:
    return [vm_state for vm_state, name in _STATUS.items() if name == status.upper()]


# Delete is allowed from every state but deleted; a second delete while one runs is a no-op.
DELETE_ALLOWED = [VmState.BUILDING, VmState.ACTIVE, VmState.STOPPED, VmState.ERROR]
