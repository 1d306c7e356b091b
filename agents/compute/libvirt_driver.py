"""The real compute driver: libvirt (QEMU/KVM) through libvirt-python.

One libvirt connection per worker thread, reopened when found dead: libvirtd serves at most
``max_client_requests`` (5) calls of one connection at a time, and a domain start takes seconds
(about 400 QMP round trips for the guest CPU alone), so on one shared connection five concurrent
spawns stalled every other call of the agent (a lookup, a heartbeat) for seconds.

A connection failure raises :class:`~agents.compute.driver.HypervisorUnavailable` (``transient``:
the task retries); every other libvirt, qemu-img or filesystem failure raises
:class:`~agents.compute.driver.ComputeError` (or ``StorageError`` from the image cache) with a
message a user can read.

A started domain keeps a quarter of the CPU weight it started with (``RUNNING_WEIGHT_DIVISOR``).

``spawn`` and ``destroy`` of one instance never run at the same time in one process (a per-instance
lock); both are idempotent.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import platform
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt

from agents import names
from agents.compute import config as vconfig
from agents.compute.designer import design_guest, design_volume_disk
from agents.compute.driver import ComputeDriver, ComputeError, HypervisorUnavailable
from agents.config import EPHEMERAL_DISK, SWAP_DISK, AgentConfig, InstancePaths
from agents.locks import KeyedLocks
from agents.network import NetworkError
from agents.network.driver import get_network_driver
from agents.network.metadata_configdrive import build_config_drive
from agents.specs import (
    POWER_CRASHED,
    POWER_NOSTATE,
    POWER_PAUSED,
    POWER_RUNNING,
    POWER_SHUTDOWN,
    POWER_SUSPENDED,
    DiskSpec,
    DomainSpec,
    VolumeAttachSpec,
)
from agents.storage import StorageError, image_cache, qemu_img

__all__ = ["LIBVIRT_POWER_STATE", "LibvirtDriver"]

log = logging.getLogger(__name__)

GiB = 1 << 30

# nova/virt/libvirt/driver.py: libvirt domain states -> power states.
LIBVIRT_POWER_STATE = {
    libvirt.VIR_DOMAIN_NOSTATE: POWER_NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: POWER_RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: POWER_RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: POWER_PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: POWER_SHUTDOWN,  # being shut down
    libvirt.VIR_DOMAIN_SHUTOFF: POWER_SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: POWER_CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: POWER_SUSPENDED,
}

UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
)

DOMAIN_PREFIX = names.domain_name("")

# Never return more than this much console output, whatever ``length`` says.
CONSOLE_MAX_BYTES = 1 << 20

DESTROY_ATTEMPTS = 6

# A started domain keeps 1/RUNNING_WEIGHT_DIVISOR of the CPU weight it started with, so a domain
# being started (libvirt's ~400 QMP round trips for its guest CPU) outweighs each running guest 4
# to 1 instead of waiting its turn behind their busy vCPUs; guests still share equally among
# themselves, and an idle host gives them all of it.
RUNNING_WEIGHT_DIVISOR = 4
VOLUME_POLL_SECONDS = 0.1
# Seconds a guest agent command may take (changePassword): below the control plane's
# CLOUDMGR_AGENT_CALL_TIMEOUT (15 s), so the caller hears the agent's reason, not a timeout.
GUEST_AGENT_TIMEOUT = 10


def _ignore_libvirt_errors(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; we report them ourselves."""


libvirt.registerErrorHandler(_ignore_libvirt_errors, None)


class Stages:
    """Seconds spent in each named stage of one operation (the boot benchmark prints them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, stage: str) -> None:
        """The time since the previous lap (or the start) was spent in ``stage``."""
        now = time.monotonic()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - self._last, 4)
        self._last = now


def _is_connection_error(exc: libvirt.libvirtError) -> bool:
    code, domain = exc.get_error_code(), exc.get_error_domain()
    if code in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN):
        return True
    return code in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR) and domain in (
        libvirt.VIR_FROM_REMOTE,
        libvirt.VIR_FROM_RPC,
    )


def _message(exc: libvirt.libvirtError) -> str:
    return (exc.get_error_message() or str(exc)).strip()


class LibvirtDriver(ComputeDriver):
    name = "libvirt"

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._local = threading.local()  # .conn: this thread's connection
        self._conns: set[libvirt.virConnect] = set()  # every thread's, for close()
        self._conns_lock = threading.Lock()
        self._instance_locks = KeyedLocks()
        self._cache_mode: str | None = None
        self._hypervisor: dict[str, Any] | None = None  # hypervisor_info(), read once
        self._weight_warned = False
        self._starts = threading.BoundedSemaphore(config.max_concurrent_starts)
        self.arch = platform.machine() or "x86_64"

    # -- connection --------------------------------------------------------------------------

    def _connection(self) -> libvirt.virConnect:
        """This thread's connection (opened on first use, and again when found dead)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with self._conns_lock:
                closed = conn not in self._conns  # by close()
            if not closed:
                try:
                    if conn.isAlive():
                        return conn
                except libvirt.libvirtError:
                    pass
                log.warning("libvirt connection to %s is dead; reconnecting", self.config.libvirt_uri)
            self._drop(conn)
        try:
            conn = libvirt.open(self.config.libvirt_uri)
        except libvirt.libvirtError as exc:
            raise HypervisorUnavailable(
                f"cannot connect to the hypervisor ({self.config.libvirt_uri}): {_message(exc)}"
            ) from None
        self._local.conn = conn
        with self._conns_lock:
            self._conns.add(conn)
        return conn

    def _drop(self, conn: libvirt.virConnect | None = None) -> None:
        """Forget ``conn`` (default: this thread's connection) so the next call reconnects."""
        if conn is None:
            conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._conns_lock:
            self._conns.discard(conn)
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        """Close every thread's connection; each thread opens a new one on its next call."""
        with self._conns_lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def _libvirt(self, action: str) -> Iterator[None]:
        """Turn libvirt errors raised while doing ``action`` into compute errors."""
        try:
            yield
        except libvirt.libvirtError as exc:
            if _is_connection_error(exc):
                self._drop()
                raise HypervisorUnavailable(
                    f"lost the connection to the hypervisor while {action}: {_message(exc)}"
                ) from None
            raise ComputeError(f"{action} failed: {_message(exc)}") from None

    def _lookup(self, conn: libvirt.virConnect, instance_id: str) -> libvirt.virDomain | None:
        try:
            return conn.lookupByName(names.domain_name(instance_id))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    @staticmethod
    def _state(dom: libvirt.virDomain) -> int:
        return LIBVIRT_POWER_STATE.get(dom.state()[0], POWER_NOSTATE)

    def _paths(self, instance_id: str) -> InstancePaths:
        try:
            return self.config.instance_paths(instance_id)
        except ValueError as exc:
            raise ComputeError(str(exc)) from None

    # -- disks -------------------------------------------------------------------------------

    def _disk_cache_mode(self) -> str:
        """``none`` (O_DIRECT) if the instances directory supports it, else ``writethrough`` (as Nova)."""
        if self._cache_mode is None:
            directory = self.config.instances_dir
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".directio.{os.getpid()}.{threading.get_ident()}"
            mode = "none"
            try:
                fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
                try:
                    buf = mmap.mmap(-1, 4096)
                    try:
                        os.write(fd, buf)
                    finally:
                        buf.close()
                finally:
                    os.close(fd)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise ComputeError(f"cannot write to {directory}: {exc.strerror}") from None
                mode = "writethrough"
            finally:
                with contextlib.suppress(OSError):
                    probe.unlink()
            self._cache_mode = mode
        return self._cache_mode

    def _ensure_disk(self, disk: DiskSpec, path: Path, stages: Stages | None = None) -> None:
        """Create ``path`` if it does not exist (never touches an existing disk): an overlay on its
        cached image, an overlay on the shared base formatted with its ``fs``, or a blank disk."""
        stages = stages or Stages()
        if path.exists():
            return
        size = max(disk.size_bytes, 0)
        tmp = path.with_name(path.name + ".part")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            if disk.image is not None:
                base = image_cache.ensure_image(disk.image, self.config.image_cache_dir)
                image_size = image_cache.virtual_size(base, disk.image.disk_format)
                stages.lap("image")
                qemu_img.create_overlay(tmp, base, disk.image.disk_format, max(size, image_size))
            elif disk.fs is not None:
                try:
                    base = image_cache.ensure_formatted_base(self.config.image_cache_dir, disk.fs, size >> 20)
                except StorageError as exc:
                    raise ComputeError(f"cannot create disk {disk.name}: {exc}") from None
                stages.lap("image")
                qemu_img.create_overlay(tmp, base, "raw", size)
            else:
                if size <= 0:
                    raise ComputeError(f"disk {disk.name} has neither an image nor a size")
                qemu_img.create(tmp, "qcow2", size)
            os.replace(tmp, path)
            stages.lap("disk")
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, OSError):
                raise ComputeError(f"cannot create disk {disk.name}: {exc.strerror or exc}") from None
            raise

    # -- operations --------------------------------------------------------------------------

    def spawn(self, spec: DomainSpec) -> dict[str, Any]:
        """Also returns ``stages``: the seconds each step took (see :class:`Stages`)."""
        paths = self._paths(spec.instance_id)
        stages = Stages()
        with self._instance_locks(spec.instance_id):
            stages.lap("lock")
            conn = self._connection()  # fail fast (and retry) before creating anything
            guest = design_guest(spec, paths, disk_cache_mode=self._disk_cache_mode(), arch=self.arch)
            try:
                paths.instance_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            except OSError as exc:
                raise ComputeError(f"cannot create the instance directory: {exc.strerror}") from None
            stages.lap("prepare")
            for disk in spec.disks:
                if disk.connection is None:  # a volume's disk exists already, on its storage host
                    self._ensure_disk(disk, paths.disk_path(disk.name), stages)
            if spec.config_drive is not None:
                build_config_drive(paths.config_drive, spec.config_drive)
                stages.lap("config_drive")
            if spec.nics:
                try:  # the taps exist before the domain: it opens them (managed='no')
                    get_network_driver().plug_nics(spec.nics)
                except NetworkError as exc:
                    raise ComputeError(f"cannot plug the network interfaces: {exc}") from None
                stages.lap("plug")

            with self._libvirt("defining the domain"):
                dom = self._lookup(conn, spec.instance_id)
                if dom is None:
                    log.info("defining domain %s", guest.name)
                    dom = conn.defineXML(guest.to_xml())
            stages.lap("define")
            with self._libvirt("starting the instance"):
                state = dom.state()[0]
                if state == libvirt.VIR_DOMAIN_PAUSED:
                    dom.resume()
                elif state == libvirt.VIR_DOMAIN_PMSUSPENDED:
                    dom.pMWakeup(0)
                elif not dom.isActive():
                    log.info("starting domain %s", guest.name)
                    self._create(dom, stages)
                power_state = self._state(dom)
            stages.lap("start")
            return {"power_state": power_state, "stages": stages.seconds}

    def _destroy_domain(self, dom: libvirt.virDomain) -> None:
        for attempt in range(1, DESTROY_ATTEMPTS + 1):
            try:
                if dom.isActive():
                    dom.destroy()
                return
            except libvirt.libvirtError as exc:
                code = exc.get_error_code()
                if code in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                    return  # gone or already stopped meanwhile
                # qemu can take a moment to die (EBUSY from the kernel): try again shortly.
                retriable = code == libvirt.VIR_ERR_SYSTEM_ERROR and not _is_connection_error(exc)
                if retriable and attempt < DESTROY_ATTEMPTS:
                    log.warning("destroying %s failed (%s); retrying", dom.name(), _message(exc))
                    time.sleep(0.5 * attempt)
                    continue
                raise

    def _undefine(self, dom: libvirt.virDomain) -> None:
        try:
            dom.undefineFlags(UNDEFINE_FLAGS)
        except libvirt.libvirtError as exc:
            code = exc.get_error_code()
            if code == libvirt.VIR_ERR_NO_DOMAIN:
                return
            if code in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
                dom.undefine()
                return
            raise

    def destroy(self, instance_id: str) -> None:
        paths = self._paths(instance_id)
        with self._instance_locks(instance_id):
            conn = self._connection()
            with self._libvirt("deleting the instance"):
                dom = self._lookup(conn, instance_id)
                if dom is not None:
                    log.info("destroying domain %s", dom.name())
                    self._destroy_domain(dom)
                    self._undefine(dom)
            try:
                shutil.rmtree(paths.instance_dir)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise ComputeError(f"cannot remove the instance's files: {exc.strerror}") from None

    def power_state(self, instance_id: str) -> int:
        conn = self._connection()
        with self._libvirt("reading the instance's state"):
            try:
                dom = self._lookup(conn, instance_id)
                return POWER_NOSTATE if dom is None else self._state(dom)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return POWER_NOSTATE
                raise

    def list_domains(self) -> dict[str, int]:
        conn = self._connection()
        result: dict[str, int] = {}
        with self._libvirt("listing domains"):
            for dom in conn.listAllDomains(0):
                try:
                    name = dom.name()
                    if not name.startswith(DOMAIN_PREFIX):
                        continue
                    result[name[len(DOMAIN_PREFIX) :]] = self._state(dom)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                        continue  # undefined while we were looking
                    raise
        return result

    def console_log(self, instance_id: str, length: int | None = None) -> str:
        return read_console_log(self._paths(instance_id).console_log, length)

    def host_capacity(self) -> dict[str, int]:
        conn = self._connection()
        with self._libvirt("reading the host's capacity"):
            info = conn.getInfo()  # [model, memory MiB, cpus, MHz, nodes, sockets, cores, threads]
            # getInfo sums the NUMA nodes' memory, which misses memory hot-plugged into a VM
            # host; the node-wide total (from /proc/meminfo) is the whole of it.
            total_kib = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)["total"]
        directory = self.config.data_dir
        while not directory.exists() and directory != directory.parent:
            directory = directory.parent
        return {
            "vcpus": int(info[2]),
            "memory_mib": int(total_kib) // 1024,
            "disk_gb": shutil.disk_usage(directory).total // GiB,
        }

    def hypervisor_info(self) -> dict[str, Any]:
        """QEMU's version as Nova reports it (7.2.0 is 7002000) and the host CPU as Nova's libvirt
        driver describes it (``cpu_info``), from libvirt's capabilities; read once per process."""
        if self._hypervisor is None:
            conn = self._connection()
            with self._libvirt("reading the host's capabilities"):
                caps = ET.fromstring(conn.getCapabilities())
                version = conn.getVersion()
            cpu = caps.find("host/cpu")  # libvirt always describes it; model and vendor may be missing
            topology = cpu.find("topology")
            self._hypervisor = {"hypervisor_version": int(version), "cpu_info": {
                "arch": cpu.findtext("arch", self.arch),
                "model": cpu.findtext("model", ""),
                "vendor": cpu.findtext("vendor", ""),
                "topology": {"cells": len(caps.findall("host/topology/cells/cell")) or 1,
                             **{k: int(topology.get(k, 1) if topology is not None else 1)
                                for k in ("sockets", "cores", "threads")}},
                "features": sorted(feature.get("name") for feature in cpu.findall("feature")),
            }}
        return self._hypervisor

    # -- lifecycle operations ----------------------------------------------------------------

    def _domain(self, conn: libvirt.virConnect, instance_id: str) -> libvirt.virDomain:
        dom = self._lookup(conn, instance_id)
        if dom is None:
            raise ComputeError(f"instance {instance_id} has no domain on this host")
        return dom

    def _active_domain(self, conn: libvirt.virConnect, instance_id: str) -> libvirt.virDomain:
        dom = self._domain(conn, instance_id)
        if not dom.isActive():
            raise ComputeError(f"instance {instance_id} is not running")
        return dom

    def _wait_shutoff(self, dom: libvirt.virDomain, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not dom.isActive():
                return True
            time.sleep(0.5)
        return not dom.isActive()

    @staticmethod
    def _press_power_button(dom: libvirt.virDomain) -> None:
        try:
            dom.shutdown()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # not running: off meanwhile
                raise

    def _clean_shutdown(self, dom: libvirt.virDomain, timeout: float) -> None:
        """ACPI power button, pressed again every ``shutdown_retry_interval`` s (as Nova does: a guest
        still booting ignores the first press), then destroy if the guest did not power off within
        ``timeout`` s."""
        if not dom.isActive():
            return
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            self._destroy_domain(dom)  # a paused guest cannot see the power button
            return
        start = time.monotonic()
        deadline = start + timeout
        presses = 0
        while True:
            now = time.monotonic()
            if presses == 0 or (now < deadline and now >= start + presses * self.config.shutdown_retry_interval):
                self._press_power_button(dom)
                presses += 1
            next_press = start + presses * self.config.shutdown_retry_interval
            if self._wait_shutoff(dom, min(next_press, deadline) - time.monotonic()):
                return
            if time.monotonic() >= deadline:
                break
        log.warning("domain %s did not shut down within %s s (%d power button presses); destroying it",
                    dom.name(), timeout, presses)
        self._destroy_domain(dom)

    def _create(self, dom: libvirt.virDomain, stages: Stages | None = None) -> None:
        """Start ``dom`` (a new QEMU process; at most ``max_concurrent_starts`` at once), then
        lower its CPU weight (RUNNING_WEIGHT_DIVISOR). ``stages`` gets the wait for a turn."""
        with self._starts:
            if stages is not None:
                stages.lap("turn")
            dom.create()
        try:
            shares = dom.schedulerParametersFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE).get("cpu_shares")
            if shares:
                dom.setSchedulerParametersFlags({"cpu_shares": max(2, shares // RUNNING_WEIGHT_DIVISOR)},
                                                libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:  # no cgroup CPU controller: the guest runs all the same
            if _is_connection_error(exc):
                raise
            if not self._weight_warned:
                self._weight_warned = True
                log.warning("cannot lower the CPU weight of started domains (%s): starts may wait behind "
                            "running guests", _message(exc))

    def _start(self, dom: libvirt.virDomain) -> None:
        state = dom.state()[0]
        if state == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
        elif state == libvirt.VIR_DOMAIN_PMSUSPENDED:
            dom.pMWakeup(0)
        elif not dom.isActive():
            self._create(dom)  # restores a managed save if there is one

    def _operation(self, instance_id: str, action: str, body) -> int:
        with self._instance_locks(instance_id):
            conn = self._connection()
            with self._libvirt(action):
                dom = self._domain(conn, instance_id)
                body(dom)
                return self._state(dom)

    def start(self, instance_id: str) -> int:
        return self._operation(instance_id, "starting the instance", self._start)

    def stop(self, instance_id: str, timeout: int = 60) -> int:
        def body(dom):
            if not dom.isActive() and dom.hasManagedSaveImage(0):
                dom.managedSaveRemove(0)  # a stopped instance starts afresh
            self._clean_shutdown(dom, timeout)

        return self._operation(instance_id, "stopping the instance", body)

    def reboot(self, instance_id: str, hard: bool = False, timeout: int = 60) -> int:
        def body(dom):
            if hard:
                if dom.isActive() and dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING:
                    dom.reset(0)
                    return
                if dom.isActive():
                    self._destroy_domain(dom)
                if dom.hasManagedSaveImage(0):
                    dom.managedSaveRemove(0)
                self._create(dom)
                return
            self._clean_shutdown(dom, timeout)
            self._create(dom)

        return self._operation(instance_id, "rebooting the instance", body)

    def pause(self, instance_id: str) -> int:
        def body(dom):
            if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
                dom.suspend()

        return self._operation(instance_id, "pausing the instance", body)

    def unpause(self, instance_id: str) -> int:
        def body(dom):
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()

        return self._operation(instance_id, "unpausing the instance", body)

    def suspend(self, instance_id: str) -> int:
        def body(dom):
            if dom.isActive():
                dom.managedSave(0)

        return self._operation(instance_id, "suspending the instance", body)

    def resume(self, instance_id: str) -> int:
        return self._operation(instance_id, "resuming the instance", self._start)

    def trigger_crash_dump(self, instance_id: str) -> int:
        def body(dom):
            if not dom.isActive():
                raise ComputeError("cannot inject an NMI: the instance is not running")
            dom.injectNMI(0)

        return self._operation(instance_id, "injecting an NMI", body)

    def resize(self, spec: DomainSpec, timeout: int = 60, start: bool = True) -> int:
        paths = self._paths(spec.instance_id)
        with self._instance_locks(spec.instance_id):
            conn = self._connection()
            guest = design_guest(spec, paths, disk_cache_mode=self._disk_cache_mode(), arch=self.arch)
            with self._libvirt("resizing the instance"):
                dom = self._domain(conn, spec.instance_id)
                if dom.hasManagedSaveImage(0):
                    dom.managedSaveRemove(0)
                self._clean_shutdown(dom, timeout)
                for disk in spec.disks:
                    if disk.connection is None:  # a volume's size is the storage host's (extend)
                        self._resize_disk(disk, paths.disk_path(disk.name))
                dom = conn.defineXML(guest.to_xml())  # same name and uuid: replaces the definition
                # The new definition no longer names them: the ephemeral and swap disks its flavor lacks.
                kept = {disk.name for disk in spec.disks}
                for name in (EPHEMERAL_DISK, SWAP_DISK):
                    if name not in kept:
                        paths.disk_path(name).unlink(missing_ok=True)
                if start:
                    self._create(dom)
                return self._state(dom)

    def _resize_disk(self, disk: DiskSpec, path: Path) -> None:
        """Bring a stopped instance's local disk to ``disk``'s size: grow it (never shrink), make a
        formatted disk the old flavor did not have, and make the swap disk afresh when its size
        changes (it holds nothing across a shutdown)."""
        current = qemu_img.virtual_size(path, "qcow2") if path.exists() else None
        if disk.fs == "swap" and current is not None and current != disk.size_bytes:
            path.unlink()
            current = None
        if current is None:
            if disk.fs is not None:
                self._ensure_disk(disk, path)
        elif disk.size_bytes > current:
            qemu_img.resize(path, "qcow2", disk.size_bytes)

    def rescue(self, spec: DomainSpec, timeout: int = 60) -> int:
        paths = self._paths(spec.instance_id)
        with self._instance_locks(spec.instance_id):
            conn = self._connection()
            guest = design_guest(spec, paths, disk_cache_mode=self._disk_cache_mode(), arch=self.arch)
            with self._libvirt("rescuing the instance"):
                dom = self._domain(conn, spec.instance_id)
                if dom.hasManagedSaveImage(0):
                    dom.managedSaveRemove(0)
                self._clean_shutdown(dom, timeout)
            for disk in spec.disks:
                if disk.name == "rescue":
                    self._ensure_disk(disk, paths.disk_path(disk.name))
            with self._libvirt("rescuing the instance"):
                dom = conn.defineXML(guest.to_xml())
                self._create(dom)
                return self._state(dom)

    def unrescue(self, spec: DomainSpec) -> int:
        paths = self._paths(spec.instance_id)
        with self._instance_locks(spec.instance_id):
            conn = self._connection()
            guest = design_guest(spec, paths, disk_cache_mode=self._disk_cache_mode(), arch=self.arch)
            with self._libvirt("unrescuing the instance"):
                dom = self._domain(conn, spec.instance_id)
                self._destroy_domain(dom)
            with contextlib.suppress(FileNotFoundError):
                paths.disk_path("rescue").unlink()
            with self._libvirt("unrescuing the instance"):
                dom = conn.defineXML(guest.to_xml())
                self._create(dom)
                return self._state(dom)

    def vnc_address(self, instance_id: str) -> tuple[str, int]:
        import xml.etree.ElementTree as ET

        conn = self._connection()
        with self._libvirt("finding the console"):
            dom = self._active_domain(conn, instance_id)
            graphics = ET.fromstring(dom.XMLDesc(0)).find("./devices/graphics[@type='vnc']")
        if graphics is None or int(graphics.get("port", "-1")) <= 0:
            raise ComputeError(f"instance {instance_id} has no VNC console")
        return graphics.get("listen") or "127.0.0.1", int(graphics.get("port"))

    def diagnostics(self, instance_id: str) -> dict[str, int]:
        import xml.etree.ElementTree as ET

        conn = self._connection()
        with self._libvirt("reading the diagnostics"):
            dom = self._active_domain(conn, instance_id)
            devices = ET.fromstring(dom.XMLDesc(0)).find("devices")
            out: dict[str, int] = {}
            for number, _state, cpu_time, _cpu in dom.vcpus()[0]:
                out[f"cpu{number}_time"] = cpu_time
            for target in devices.findall("disk/target"):
                disk = target.get("dev")
                read_req, read, write_req, write, errors = dom.blockStats(disk)
                out.update({f"{disk}_read_req": read_req, f"{disk}_read": read, f"{disk}_write_req": write_req,
                            f"{disk}_write": write, f"{disk}_errors": errors})
            for target in devices.findall("interface/target"):
                tap = target.get("dev")
                stats = dom.interfaceStats(tap)
                for name, value in zip(("rx", "rx_packets", "rx_errors", "rx_drop", "tx", "tx_packets", "tx_errors",
                                        "tx_drop"), stats):
                    out[f"{tap}_{name}"] = value
            out["memory"] = dom.maxMemory()
            out.update({f"memory-{key}": value for key, value in dom.memoryStats().items()})
            return out

    def set_password(self, instance_id: str, user: str, password: str) -> None:
        conn = self._connection()
        with self._libvirt("setting the password"):
            dom = self._active_domain(conn, instance_id)
            # The guest agent runs chpasswd in the guest. libvirt would wait for a hung agent
            # forever (and hold this worker): give up well within the control plane's call.
            dom.agentSetResponseTimeout(GUEST_AGENT_TIMEOUT, 0)
            dom.setUserPassword(user, password, 0)

    def snapshot(self, instance_id: str, upload_url: str, upload_token: str | None) -> int:
        import subprocess

        import requests

        paths = self._paths(instance_id)
        disk = paths.disk_path("root")
        tmp = paths.instance_dir / "snapshot.qcow2.part"
        with self._instance_locks(instance_id):
            conn = self._connection()
            with self._libvirt("snapshotting the instance"):
                dom = self._domain(conn, instance_id)
                was_running = dom.isActive() and dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
                if was_running:
                    dom.suspend()  # a consistent copy: the guest does not write meanwhile
                try:
                    proc = subprocess.run(
                        ["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2", str(disk), str(tmp)],
                        capture_output=True, text=True, timeout=1800, check=False,
                    )
                    if proc.returncode != 0:
                        raise ComputeError(f"copying the root disk failed: {proc.stderr.strip()[-400:]}")
                finally:
                    if was_running:
                        dom.resume()
                state = self._state(dom)
        try:
            headers = {"Content-Type": "application/octet-stream"}
            if upload_token:
                headers["X-Auth-Token"] = upload_token
            with open(tmp, "rb") as data:
                headers["Content-Length"] = str(os.fstat(data.fileno()).st_size)
                resp = requests.put(upload_url, data=data, headers=headers, timeout=(10, 1800))
            if resp.status_code not in (200, 201, 204):
                raise ComputeError(f"uploading the snapshot failed: the image service answered {resp.status_code} "
                                   f"{resp.text[:300]}")
        except requests.RequestException as exc:
            raise ComputeError(f"uploading the snapshot failed: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return state

    def sync_interfaces(self, spec: DomainSpec) -> int:
        guest = design_guest(spec, self._paths(spec.instance_id), arch=self.arch)
        wanted = {d.mac_address: d for d in guest.devices if isinstance(d, vconfig.GuestInterface)}

        def body(dom):
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
            if dom.isActive():
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            defined = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            present = {mac.get("address", "").lower() for mac in defined.findall("./devices/interface/mac")}
            for mac in sorted(present - set(wanted)):
                log.info("detaching NIC %s from domain %s", mac, guest.name)
                device = ET.Element("interface", type="ethernet")
                ET.SubElement(device, "mac", address=mac)
                dom.detachDeviceFlags(ET.tostring(device, encoding="unicode"), flags)
            for mac in sorted(set(wanted) - present):
                log.info("attaching NIC %s (%s) to domain %s", mac, wanted[mac].target_dev, guest.name)
                dom.attachDeviceFlags(wanted[mac].to_xml(), flags)

        return self._operation(spec.instance_id, "changing the instance's network interfaces", body)

    def rebuild(self, spec: DomainSpec, timeout: int = 60) -> int:
        with self._instance_locks(spec.instance_id):
            conn = self._connection()
            with self._libvirt("rebuilding the instance"):
                dom = self._lookup(conn, spec.instance_id)
                if dom is not None:
                    self._clean_shutdown(dom, min(timeout, 10))
        self.destroy(spec.instance_id)
        return self.spawn(spec)["power_state"]

    # -- volumes -------------------------------------------------------------------------------

    @staticmethod
    def _volume_disk(xml: str, serial: str) -> ET.Element | None:
        """The ``<disk>`` whose serial is the volume id, in a domain's XML."""
        for disk in ET.fromstring(xml).findall("./devices/disk"):
            if (disk.findtext("serial") or "") == serial:
                return disk
        return None

    @staticmethod
    def _check_target_free(xml: str, device: str, serial: str, instance_id: str) -> None:
        for disk in ET.fromstring(xml).findall("./devices/disk"):
            target = disk.find("target")
            if target is not None and target.get("dev") == device and (disk.findtext("serial") or "") != serial:
                raise ComputeError(f"device {device} of instance {instance_id} is already used by another disk")

    def volume_attach(self, spec: VolumeAttachSpec) -> int:
        disk = design_volume_disk(spec, disk_cache_mode=self._disk_cache_mode())

        def body(dom):
            flags = 0
            views = []
            if dom.isActive():
                views.append((libvirt.VIR_DOMAIN_AFFECT_LIVE, dom.XMLDesc(0)))
            if dom.isPersistent():
                views.append((libvirt.VIR_DOMAIN_AFFECT_CONFIG, dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
            for flag, xml in views:
                if self._volume_disk(xml, disk.serial) is None:
                    self._check_target_free(xml, spec.device, disk.serial, spec.instance_id)
                    flags |= flag
            if flags:
                log.info("attaching volume %s as %s to domain %s", spec.volume_id, spec.device, dom.name())
                dom.attachDeviceFlags(disk.to_xml(), flags)

        return self._operation(spec.instance_id, "attaching the volume", body)

    def _released(self, dom: libvirt.virDomain, serial: str, timeout: float) -> bool:
        """Wait until the running guest has given the disk back (QEMU removed the device)."""
        deadline = time.monotonic() + timeout
        while True:
            if not dom.isActive() or self._volume_disk(dom.XMLDesc(0), serial) is None:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(VOLUME_POLL_SECONDS)

    def volume_detach(self, spec: VolumeAttachSpec) -> int:
        serial = spec.volume_id

        def body(dom):
            live = self._volume_disk(dom.XMLDesc(0), serial) if dom.isActive() else None
            if live is not None:
                device = live.find("target").get("dev")
                log.info("detaching volume %s (%s) from domain %s", serial, device, dom.name())
                try:
                    dom.detachDeviceFlags(ET.tostring(live, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
                except libvirt.libvirtError as exc:
                    # A detach asked before (a retry) is still pending in the guest: wait for it.
                    if _is_connection_error(exc) or "unplug" not in _message(exc).lower():
                        raise
                if not self._released(dom, serial, spec.timeout):
                    raise ComputeError(
                        f"the guest did not release volume {serial} ({device}) within {spec.timeout} s, so it is "
                        "still attached: the guest may be using it or may ignore hot-unplug; unmount it in the "
                        "guest and detach again, or stop the instance first")
            if dom.isPersistent():
                defined = self._volume_disk(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), serial)
                if defined is not None:
                    dom.detachDeviceFlags(ET.tostring(defined, encoding="unicode"),
                                          libvirt.VIR_DOMAIN_AFFECT_CONFIG)

        return self._operation(spec.instance_id, "detaching the volume", body)

    @staticmethod
    def _volume_source_size(disk: ET.Element) -> int | None:
        """The size of an attached volume's source as this host sees it (None for NBD)."""
        source = disk.find("source")
        if disk.get("type") == "file":
            fmt = disk.find("driver").get("type", "raw")
            return qemu_img.virtual_size(source.get("file"), fmt)
        if disk.get("type") == "block":
            try:
                fd = os.open(source.get("dev"), os.O_RDONLY)
            except OSError as exc:
                raise ComputeError(f"cannot open the volume's device: {exc.strerror}") from None
            try:
                return os.lseek(fd, 0, os.SEEK_END)
            finally:
                os.close(fd)
        return None

    def volume_resized(self, spec: VolumeAttachSpec) -> int:
        with self._instance_locks(spec.instance_id):
            conn = self._connection()
            with self._libvirt("resizing the volume"):
                dom = self._domain(conn, spec.instance_id)
                disk = self._volume_disk(dom.XMLDesc(0), spec.volume_id) if dom.isActive() else None
                if disk is None:
                    raise ComputeError(f"volume {spec.volume_id} is not attached to running instance "
                                       f"{spec.instance_id}")
                device = disk.find("target").get("dev")
                capacity = dom.blockInfo(device)[0]
                size = spec.size_gb * GiB if spec.size_gb else self._volume_source_size(disk)
                if disk.get("type") == "network" and (size is None or size > capacity):
                    raise ComputeError("the volume is attached over NBD, and QEMU cannot grow an NBD disk while it "
                                       "is attached: detach it and attach it again to see the new size")
                if size > capacity:
                    log.info("telling domain %s that %s grew to %d bytes", dom.name(), device, size)
                    dom.blockResize(device, size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                    capacity = dom.blockInfo(device)[0]
                return capacity


def read_console_log(path: Path, length: int | None = None, max_bytes: int = CONSOLE_MAX_BYTES) -> str:
    """The last ``length`` lines (all if ``None``) of at most the last ``max_bytes`` of ``path``."""
    if length is not None:
        length = int(length)
        if length < 0:
            raise ComputeError("the console length must not be negative")
        if length == 0:
            return ""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            f.seek(start)
            data = f.read(max_bytes)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ComputeError(f"cannot read the console log: {exc.strerror}") from None
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    if start > 0 and lines:
        lines = lines[1:]  # the first line was cut in the middle
    if length is not None:
        lines = lines[-length:]
    return "".join(lines)
