"""The real compute driver: libvirt (QEMU/KVM) through libvirt-python.

One libvirt connection per process, shared by the worker's threads (libvirt connections are
thread-safe); it is reopened when found dead. A connection failure raises
:class:`~agents.compute.driver.HypervisorUnavailable` (``transient``: the task retries); every other
libvirt, qemu-img or filesystem failure raises :class:`~agents.compute.driver.ComputeError` (or
``StorageError`` from the image cache) with a message a user can read.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt

from agents import names
from agents.compute.designer import design_guest
from agents.compute.driver import ComputeDriver, ComputeError, HypervisorUnavailable
from agents.config import AgentConfig, InstancePaths
from agents.locks import KeyedLocks
from agents.specs import (
    POWER_CRASHED,
    POWER_NOSTATE,
    POWER_PAUSED,
    POWER_RUNNING,
    POWER_SHUTDOWN,
    POWER_SUSPENDED,
    DiskSpec,
    DomainSpec,
)
from agents.storage import image_cache, qemu_img

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


def _ignore_libvirt_errors(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; we report them ourselves."""


libvirt.registerErrorHandler(_ignore_libvirt_errors, None)


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
        self._conn: libvirt.virConnect | None = None
        self._conn_lock = threading.Lock()
        self._instance_locks = KeyedLocks()
        self._cache_mode: str | None = None
        self.arch = platform.machine() or "x86_64"

    # -- connection --------------------------------------------------------------------------

    def _connection(self) -> libvirt.virConnect:
        with self._conn_lock:
            conn = self._conn
            if conn is not None:
                try:
                    if conn.isAlive():
                        return conn
                except libvirt.libvirtError:
                    pass
                log.warning("libvirt connection to %s is dead; reconnecting", self.config.libvirt_uri)
                self._drop(conn)
            try:
                self._conn = libvirt.open(self.config.libvirt_uri)
            except libvirt.libvirtError as exc:
                raise HypervisorUnavailable(
                    f"cannot connect to the hypervisor ({self.config.libvirt_uri}): {_message(exc)}"
                ) from None
            return self._conn

    def _drop(self, conn: libvirt.virConnect | None = None) -> None:
        """Forget ``conn`` (default: the current connection) so the next call reconnects."""
        if conn is None:
            conn = self._conn
        if conn is self._conn:
            self._conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        with self._conn_lock:
            self._drop()

    @contextlib.contextmanager
    def _libvirt(self, action: str) -> Iterator[None]:
        """Turn libvirt errors raised while doing ``action`` into compute errors."""
        try:
            yield
        except libvirt.libvirtError as exc:
            if _is_connection_error(exc):
                with self._conn_lock:
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

    def _ensure_disk(self, disk: DiskSpec, path: Path) -> None:
        """Create ``path`` if it does not exist (never touches an existing disk)."""
        if path.exists():
            return
        size = max(int(disk.size_gb), 0) * GiB
        tmp = path.with_name(path.name + ".part")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            if disk.image is not None:
                base = image_cache.ensure_image(disk.image, self.config.image_cache_dir)
                image_size = qemu_img.virtual_size(base, disk.image.disk_format)
                qemu_img.create_overlay(tmp, base, disk.image.disk_format, max(size, image_size))
            else:
                if size <= 0:
                    raise ComputeError(f"disk {disk.name} has neither an image nor a size")
                qemu_img.create(tmp, "qcow2", size)
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, OSError):
                raise ComputeError(f"cannot create disk {disk.name}: {exc.strerror or exc}") from None
            raise

    # -- operations --------------------------------------------------------------------------

    def spawn(self, spec: DomainSpec) -> dict[str, Any]:
        paths = self._paths(spec.instance_id)
        with self._instance_locks(spec.instance_id):
            conn = self._connection()  # fail fast (and retry) before creating anything
            guest = design_guest(spec, paths, disk_cache_mode=self._disk_cache_mode(), arch=self.arch)
            try:
                paths.instance_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            except OSError as exc:
                raise ComputeError(f"cannot create the instance directory: {exc.strerror}") from None
            for disk in spec.disks:
                self._ensure_disk(disk, paths.disk_path(disk.name))

            with self._libvirt("defining the domain"):
                dom = self._lookup(conn, spec.instance_id)
                if dom is None:
                    log.info("defining domain %s", guest.name)
                    dom = conn.defineXML(guest.to_xml())
            with self._libvirt("starting the instance"):
                state = dom.state()[0]
                if state == libvirt.VIR_DOMAIN_PAUSED:
                    dom.resume()
                elif state == libvirt.VIR_DOMAIN_PMSUSPENDED:
                    dom.pMWakeup(0)
                elif not dom.isActive():
                    log.info("starting domain %s", guest.name)
                    dom.create()
                return {"power_state": self._state(dom)}

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

    # -- lifecycle operations ----------------------------------------------------------------

    def _domain(self, conn: libvirt.virConnect, instance_id: str) -> libvirt.virDomain:
        dom = self._lookup(conn, instance_id)
        if dom is None:
            raise ComputeError(f"instance {instance_id} has no domain on this host")
        return dom

    def _wait_shutoff(self, dom: libvirt.virDomain, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not dom.isActive():
                return True
            time.sleep(0.5)
        return not dom.isActive()

    def _clean_shutdown(self, dom: libvirt.virDomain, timeout: float) -> None:
        """ACPI power button, then destroy if the guest did not power off within ``timeout`` s."""
        if not dom.isActive():
            return
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            self._destroy_domain(dom)  # a paused guest cannot see the power button
            return
        try:
            dom.shutdown()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                raise
        if not self._wait_shutoff(dom, timeout):
            log.warning("domain %s did not shut down within %s s; destroying it", dom.name(), timeout)
            self._destroy_domain(dom)

    def _start(self, dom: libvirt.virDomain) -> None:
        state = dom.state()[0]
        if state == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
        elif state == libvirt.VIR_DOMAIN_PMSUSPENDED:
            dom.pMWakeup(0)
        elif not dom.isActive():
            dom.create()  # restores a managed save if there is one

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
                dom.create()
                return
            self._clean_shutdown(dom, timeout)
            dom.create()

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
                    path = paths.disk_path(disk.name)
                    if path.exists() and disk.size_gb:
                        current = qemu_img.virtual_size(path, "qcow2")
                        if disk.size_gb * GiB > current:
                            qemu_img.resize(path, "qcow2", disk.size_gb * GiB)
                dom = conn.defineXML(guest.to_xml())  # same name and uuid: replaces the definition
                if start:
                    dom.create()
                return self._state(dom)

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
                dom.create()
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
                dom.create()
                return self._state(dom)

    def vnc_address(self, instance_id: str) -> tuple[str, int]:
        import xml.etree.ElementTree as ET

        conn = self._connection()
        with self._libvirt("finding the console"):
            dom = self._domain(conn, instance_id)
            if not dom.isActive():
                raise ComputeError(f"instance {instance_id} is not running")
            graphics = ET.fromstring(dom.XMLDesc(0)).find("./devices/graphics[@type='vnc']")
        if graphics is None or int(graphics.get("port", "-1")) <= 0:
            raise ComputeError(f"instance {instance_id} has no VNC console")
        return graphics.get("listen") or "127.0.0.1", int(graphics.get("port"))

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

    def rebuild(self, spec: DomainSpec, timeout: int = 60) -> int:
        with self._instance_locks(spec.instance_id):
            conn = self._connection()
            with self._libvirt("rebuilding the instance"):
                dom = self._lookup(conn, spec.instance_id)
                if dom is not None:
                    self._clean_shutdown(dom, min(timeout, 10))
        self.destroy(spec.instance_id)
        return self.spawn(spec)["power_state"]


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
