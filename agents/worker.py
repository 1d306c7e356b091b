"""The agents' Celery app and heartbeat.

Start one agent per host (it consumes only its host's queue, ``agents.names.host_queue(hostname)``)::

    celery -A agents.worker worker -Q host.<hostname> -P threads -c 16

Sixteen threads, because most tasks wait (on libvirtd, qemu-img, the network lock): with four,
five concurrent boots queued their spawns behind each other's destroys and network syncs.

Configuration comes from the environment only (see :mod:`agents.config`): ``CELERY_BROKER_URL``,
``CLOUDMGR_HOSTNAME``, ``CLOUDMGR_DATA_DIR``, ``CLOUDMGR_COMPUTE_DRIVER``, ...

* Tasks (``agents.tasks``) are acknowledged late and rejected (redelivered) if the worker dies, so
  every operation is idempotent. Their results are not stored, except ``console_log``'s (a
  synchronous call): the result backend is the broker's Redis.
* When the worker is ready a daemon thread sends a heartbeat at once and then every
  ``CLOUDMGR_HEARTBEAT_INTERVAL`` seconds: task ``agents.names.TASK_HOST_HEARTBEAT`` on the
  ``control`` queue with one argument, ``HostReport(...).to_dict()``. Heartbeats expire (see
  :func:`heartbeat_expires`) so a control plane that was down does not process a backlog.
* Control-plane tasks (``apps.*``, e.g. the spawn/destroy callbacks linked to our tasks) are routed
  to the ``control`` queue even if the signature the control plane linked carries no queue.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from agents import AGENT_VERSION, names
from agents.compute.driver import ComputeDriver, ComputeError, get_driver
from agents.config import AgentConfig, get_config
from agents.specs import HostReport

__all__ = ["HeartbeatThread", "app", "build_host_report", "heartbeat_expires", "send_heartbeat"]

log = logging.getLogger(__name__)


def make_app(config: AgentConfig | None = None) -> Celery:
    config = config or get_config()
    # fixups=[]: never load Celery's Django fixup, even if DJANGO_SETTINGS_MODULE is set.
    celery_app = Celery("cloudmgr-agents", fixups=[])
    celery_app.conf.update(
        broker_url=config.broker_url,
        result_backend=config.broker_url,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # only console_log stores its result (it overrides this)
        result_expires=3600,
        imports=("agents.tasks", "agents.network.tasks", "agents.storage.tasks"),
        task_routes={"apps.*": {"queue": config.control_queue}},
    )
    return celery_app


app = make_app()

# When this process started: heartbeats carry it, so the control plane sees a restart.
STARTED_AT = time.time()


def build_host_report(driver: ComputeDriver | None = None, config: AgentConfig | None = None) -> HostReport:
    """What this host's heartbeat says: identity, capacity and cloudmgr's domains."""
    config = config or get_config()
    driver = driver or get_driver()
    capacity = driver.host_capacity()
    hypervisor = driver.hypervisor_info()
    domains = driver.list_domains()
    return HostReport(
        hostname=config.hostname,
        queue=names.host_queue(config.hostname),
        virt_type=config.virt_type,
        vcpus=int(capacity["vcpus"]),
        memory_mib=int(capacity["memory_mib"]),
        disk_gb=int(capacity["disk_gb"]),
        agent_version=AGENT_VERSION,
        domains={str(k): int(v) for k, v in domains.items()},
        hypervisor_version=int(hypervisor["hypervisor_version"]),
        cpu_info=dict(hypervisor["cpu_info"]),
        started_at=STARTED_AT,
    )


def heartbeat_expires(interval: float) -> float:
    """Seconds after which an unprocessed heartbeat is discarded (a newer one supersedes it)."""
    return max(30.0, 6 * interval)


def send_heartbeat(celery_app: Celery | None = None, config: AgentConfig | None = None) -> HostReport:
    """Build and send one heartbeat; returns the report sent."""
    celery_app = celery_app or app
    config = config or get_config()
    report = build_host_report(config=config)
    celery_app.send_task(
        names.TASK_HOST_HEARTBEAT,
        args=[report.to_dict()],
        queue=config.control_queue,
        expires=heartbeat_expires(config.heartbeat_interval),
        ignore_result=True,
    )
    return report


class HeartbeatThread(threading.Thread):
    """Calls ``send`` at once and then every ``interval`` seconds until stopped; survives errors."""

    def __init__(self, interval: float, send: Callable[[], object] | None = None) -> None:
        super().__init__(name="cloudmgr-heartbeat", daemon=True)
        self.interval = interval
        self._send = send or (lambda: send_heartbeat())
        self._stopped = threading.Event()
        self.sent = 0
        self.failed = 0

    def run(self) -> None:
        log.info("heartbeat every %g s", self.interval)
        while not self._stopped.is_set():
            try:
                self._send()
                self.sent += 1
            except ComputeError as exc:  # e.g. libvirtd is down: no traceback every few seconds
                self.failed += 1
                log.warning("heartbeat failed: %s; will try again in %g s", exc, self.interval)
            except Exception:
                self.failed += 1
                log.exception("heartbeat failed; will try again in %g s", self.interval)
            self._stopped.wait(self.interval)

    def stop(self, timeout: float | None = None) -> None:
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)


_heartbeat: HeartbeatThread | None = None
_heartbeat_lock = threading.Lock()

# How often a thread running Python hands the GIL on (Python's default: 5 ms). The agent's 16
# threads mix Python work (firewall and DHCP updates, message decoding) with waits on libvirtd and
# commands; a task that arrives waits for the GIL in 5 ms turns behind them. At 1 ms a spawn
# reached its thread sooner at concurrency 5 (docs/compute.md, "Boot performance").
GIL_SWITCH_INTERVAL = 0.001


def start_heartbeat() -> HeartbeatThread:
    """Start the process's heartbeat thread (once)."""
    global _heartbeat
    with _heartbeat_lock:
        if _heartbeat is None or not _heartbeat.is_alive():
            _heartbeat = HeartbeatThread(get_config().heartbeat_interval)
            _heartbeat.start()
        return _heartbeat


def stop_heartbeat() -> None:
    global _heartbeat
    with _heartbeat_lock:
        thread, _heartbeat = _heartbeat, None
    if thread is not None:
        thread.stop(timeout=5)


@worker_ready.connect
def _on_worker_ready(sender=None, **_kwargs) -> None:
    if getattr(sender, "app", app) is not app:
        return  # another Celery app in this process
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    start_heartbeat()


@worker_shutdown.connect
def _on_worker_shutdown(sender=None, **_kwargs) -> None:
    stop_heartbeat()
