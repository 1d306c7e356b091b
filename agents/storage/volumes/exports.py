"""How a compute host reaches a volume: a local path, or an NBD export.

On one box (the compute host is the storage host) the guest opens the volume itself: the file
backend's qcow2 file or the LVM backend's block device. For another host the volume is served
over NBD by its own qemu-storage-daemon, on ``CLOUDMGR_NBD_ADDRESS`` and a port from
``CLOUDMGR_NBD_PORTS``; the daemon is the only process that opens the image, and it accepts one
client at a time, so two hosts can never write the same volume.

NBD has no authentication here: the address must be on a storage network that only compute
hosts reach (TLS with x509 certificates is what libvirt supports for NBD disks, and is the next
step).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
from pathlib import Path

from agents.specs import VolumeConnection
from agents.storage import StorageError
from agents.storage.volumes.base import VolumeBackend, export_daemon
from agents.storage.volumes.holders import EXPORT_NODE
from agents.storage.volumes.qsd import blockdev_arg

__all__ = ["export", "unexport"]

log = logging.getLogger(__name__)

STATE_FILE = "export.json"


def _state(state_dir: Path) -> dict | None:
    try:
        return json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _ports_in_use(run_dir: Path) -> set[int]:
    used = set()
    for state_file in run_dir.glob(f"nbd/*/{STATE_FILE}"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            used.add(int(json.loads(state_file.read_text())["port"]))
    return used


def _free(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise StorageError(f"cannot listen on {address}: {exc.strerror}") from None
    return True


def _connection(state: dict) -> VolumeConnection:
    return VolumeConnection(driver="nbd", format="raw", host=state["address"], port=int(state["port"]),
                            export=state["export"])


def export(backend: VolumeBackend, volume_id: str, *, remote: bool) -> VolumeConnection:
    """The volume's connection: local, or (``remote``) its NBD export, started if not running."""
    if not remote:
        return backend.local_connection(volume_id)
    config = backend.config
    if not config.nbd_address:
        raise StorageError("this storage host serves no NBD exports: set CLOUDMGR_NBD_ADDRESS to its "
                           "address on the storage network")
    daemon = export_daemon(config, volume_id)
    with backend.lock(volume_id):
        state = _state(daemon.state_dir)
        if daemon.running() and state is not None:
            return _connection(state)
        daemon.stop()
        node = {**backend.blockdev(volume_id), "node-name": EXPORT_NODE, "discard": "unmap",
                "cache": {"direct": True}}
        low, high = config.nbd_ports
        taken = _ports_in_use(config.run_dir)
        for port in range(low, high + 1):
            if port in taken or not _free(config.nbd_address, port):
                continue
            server = {"addr": {"type": "inet", "host": config.nbd_address, "port": str(port)},
                      "max-connections": 1}
            exp = {"type": "nbd", "id": "export", "node-name": EXPORT_NODE, "name": volume_id, "writable": True}
            try:
                daemon.start([*blockdev_arg(node), "--nbd-server", json.dumps(server), "--export", json.dumps(exp)])
            except StorageError as exc:
                if "Address already in use" in str(exc):
                    continue  # taken between our probe and the daemon's bind
                raise StorageError(f"cannot export volume {volume_id}: {exc}") from None
            state = {"address": config.nbd_address, "port": port, "export": volume_id}
            (daemon.state_dir / STATE_FILE).write_text(json.dumps(state))
            log.info("exported volume %s on nbd://%s:%d/%s", volume_id, config.nbd_address, port, volume_id)
            return _connection(state)
        raise StorageError(f"no free NBD port in {low}-{high} on {config.nbd_address}")


def unexport(backend: VolumeBackend, volume_id: str) -> None:
    """Stop the volume's NBD export (its client is cut off); a volume not exported is fine."""
    daemon = export_daemon(backend.config, volume_id)
    with backend.lock(volume_id):
        daemon.stop()
        (daemon.state_dir / STATE_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            daemon.state_dir.rmdir()
