"""Who holds a volume open, and how to copy or grow it through that holder.

QEMU locks the images it opens, so while a volume is attached nothing else may write it, and a
copy read behind the guest's back would be torn (QEMU keeps qcow2 metadata in memory). An
attached volume is therefore copied or grown by the process that holds it:

* a guest on this host (the one-box path: the domain opened the volume's file or device):
  a libvirt push backup (``virDomainBackupBegin``: QEMU's point-in-time copy-before-write job,
  the guest keeps running) and ``virDomainBlockResize`` (the guest is told the new size);
* the volume's own qemu-storage-daemon (an NBD export for another host): QMP
  ``blockdev-backup``. QEMU's NBD client cannot grow a disk, so an NBD-attached volume is not
  extended while attached: the error says to detach first.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from agents.storage import StorageError, qemu_img
from agents.storage.volumes.qsd import StorageDaemon

__all__ = ["DaemonHolder", "DomainHolder", "Holder", "find_domain_holder"]

log = logging.getLogger(__name__)

COPY_TIMEOUT = 3600
POLL_SECONDS = 0.1
EXPORT_NODE = "volume"


class Holder(abc.ABC):
    """A process that has a volume open."""

    description = "a running process"

    @abc.abstractmethod
    def copy_to(self, target: Path, size_bytes: int) -> None:
        """Write a crash-consistent point-in-time copy of the volume to a new qcow2 ``target``."""

    @abc.abstractmethod
    def resize(self, size_bytes: int) -> None:
        """Grow the volume to ``size_bytes`` through the holder (the guest sees the new size)."""


class DomainHolder(Holder):
    """A libvirt domain on this host with the volume as its disk ``target``."""

    def __init__(self, uri: str, domain_name: str, target: str) -> None:
        self.uri = uri
        self.domain_name = domain_name
        self.target = target
        self.description = f"the guest {domain_name} (disk {target})"

    @contextlib.contextmanager
    def _domain(self, action: str):
        import libvirt

        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise StorageError(f"{action}: cannot reach the hypervisor: {exc.get_error_message()}") from None
        try:
            yield conn.lookupByName(self.domain_name)
        except libvirt.libvirtError as exc:
            raise StorageError(f"{action} through {self.description} failed: {exc.get_error_message()}") from None
        finally:
            conn.close()

    def copy_to(self, target: Path, size_bytes: int) -> None:
        import libvirt

        backup = ET.Element("domainbackup", mode="push")
        disks = ET.SubElement(backup, "disks")
        with self._domain("copying the volume") as dom:
            for disk in ET.fromstring(dom.XMLDesc(0)).findall("./devices/disk/target"):
                name = disk.get("dev")
                if name == self.target:
                    el = ET.SubElement(disks, "disk", name=name, backup="yes", type="file")
                    ET.SubElement(el, "target", file=str(target))
                    ET.SubElement(el, "driver", type="qcow2")
                else:
                    ET.SubElement(disks, "disk", name=name, backup="no")
            dom.backupBegin(ET.tostring(backup, encoding="unicode"), None, 0)
            deadline = time.monotonic() + COPY_TIMEOUT
            while dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                if time.monotonic() > deadline:
                    dom.abortJob()
                    raise StorageError(f"copying the volume through {self.description} took over {COPY_TIMEOUT} s")
                time.sleep(POLL_SECONDS)
            stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        if not stats.get("success", False) or not target.exists():
            raise StorageError(f"copying the volume through {self.description} failed: "
                               f"{stats.get('errmsg') or 'the backup job did not complete'}")
        os.chmod(target, 0o644)  # a snapshot may become a backing file that guests read

    def resize(self, size_bytes: int) -> None:
        import libvirt

        with self._domain("growing the volume") as dom:
            dom.blockResize(self.target, size_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)


class DaemonHolder(Holder):
    """The volume's qemu-storage-daemon (an NBD export), whose block node is ``volume``."""

    def __init__(self, daemon: StorageDaemon) -> None:
        self.daemon = daemon
        self.description = "its NBD export"

    def copy_to(self, target: Path, size_bytes: int) -> None:
        qemu_img.create(target, "qcow2", size_bytes)
        node, job = f"copy-{uuid.uuid4().hex[:8]}", f"job-{uuid.uuid4().hex[:8]}"
        with self.daemon.qmp() as qmp:
            qmp.execute("blockdev-add", **{"driver": "qcow2", "node-name": node,
                                           "file": {"driver": "file", "filename": str(target)}})
            try:
                qmp.execute("blockdev-backup", **{"job-id": job, "device": EXPORT_NODE, "target": node,
                                                  "sync": "full", "auto-dismiss": False})
                deadline = time.monotonic() + COPY_TIMEOUT
                while True:
                    state = next((j for j in qmp.execute("query-jobs") if j["id"] == job), None)
                    if state is None or state["status"] == "concluded":
                        break
                    if time.monotonic() > deadline:
                        qmp.execute("job-cancel", id=job)
                        raise StorageError(f"copying the volume through its NBD export took over {COPY_TIMEOUT} s")
                    time.sleep(POLL_SECONDS)
                if state is not None:
                    qmp.execute("job-dismiss", id=job)
                    if state.get("error"):
                        raise StorageError(f"copying the volume through its NBD export failed: {state['error']}")
            finally:
                qmp.execute("blockdev-del", **{"node-name": node})

    def resize(self, size_bytes: int) -> None:
        raise StorageError("the volume is attached over NBD, and QEMU cannot grow an NBD disk while it is attached: "
                           "detach it, extend it, and attach it again")


def _same_file(a: str, b: Path) -> bool:
    return a == str(b) or os.path.realpath(a) == os.path.realpath(b)


def find_domain_holder(uri: str, path: Path) -> DomainHolder | None:
    """The running guest on this host that has ``path`` as a disk, if any. A host without a
    hypervisor (a storage host) has none."""
    import libvirt

    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return None
    try:
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                xml = dom.XMLDesc(0)
            except libvirt.libvirtError:
                continue  # stopped meanwhile
            for disk in ET.fromstring(xml).findall("./devices/disk"):
                source, target = disk.find("source"), disk.find("target")
                if source is None or target is None:
                    continue
                held = source.get("file") or source.get("dev")
                if held and _same_file(held, path):
                    return DomainHolder(uri, dom.name(), target.get("dev", ""))
    finally:
        conn.close()
    return None
