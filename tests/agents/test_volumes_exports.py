"""Exports with the real qemu-storage-daemon: a local path on one box, NBD for another host
(read and written through ``nbd://`` by qemu-io, as a remote QEMU would). A guest attaching an
NBD export as a network disk is in test_volumes_guest.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from agents.specs import VolumeConnection, VolumeSpec
from agents.storage import StorageError
from agents.storage import tasks as storage_tasks
from agents.storage.volumes import LocalVolumeDriver, reset_volume_driver
from agents.storage.volumes.base import export_daemon
from agents.storage.volumes.config import load_volume_config

MiB = 1 << 20


@pytest.fixture
def data_dir():
    path = Path(tempfile.mkdtemp(prefix="texp-", dir="/tmp"))
    yield path
    for state in (path / "run" / "vol" / "nbd").glob("*"):
        export_daemon(load_volume_config({"CLOUDMGR_DATA_DIR": str(path)}), state.name).stop()
    shutil.rmtree(path, ignore_errors=True)


def make_driver(data_dir: Path, **env: str) -> LocalVolumeDriver:
    return LocalVolumeDriver(load_volume_config({"CLOUDMGR_DATA_DIR": str(data_dir), "CLOUDMGR_HOSTNAME": "st1",
                                                 **env}))


@pytest.fixture
def driver(data_dir) -> LocalVolumeDriver:
    return make_driver(data_dir, CLOUDMGR_NBD_ADDRESS="127.0.0.1", CLOUDMGR_NBD_PORTS="10870-10879")


def nbd_io(connection: VolumeConnection, command: str) -> subprocess.CompletedProcess:
    url = f"nbd://{connection.host}:{connection.port}/{connection.export}"
    return subprocess.run(["qemu-io", "-f", "raw", "-c", command, url], capture_output=True, text=True, timeout=60)


def test_the_same_host_gets_the_volume_file(driver):
    driver.volume_create(VolumeSpec(id="v1", size_gb=1))
    path = str(driver.backend("file").volume_path("v1"))
    expected = VolumeConnection(driver="file", path=path, format="qcow2")
    assert driver.volume_export(VolumeSpec(id="v1", size_gb=1)) == expected
    assert driver.volume_export(VolumeSpec(id="v1", size_gb=1), "st1") == expected
    assert not export_daemon(driver.config, "v1").running()


def test_another_host_gets_an_nbd_export_that_reads_and_writes_the_volume(driver):
    driver.volume_create(VolumeSpec(id="v1", size_gb=1))
    connection = driver.volume_export(VolumeSpec(id="v1", size_gb=1), "compute-2")
    assert connection.driver == "nbd" and connection.format == "raw" and connection.host == "127.0.0.1"
    assert 10870 <= connection.port <= 10879 and connection.export == "v1"
    assert "wrote" in nbd_io(connection, "write -P 0x42 0 1M").stdout
    assert driver.volume_export(VolumeSpec(id="v1", size_gb=1), "compute-2") == connection  # same daemon

    driver.volume_create(VolumeSpec(id="v2", size_gb=1))
    other = driver.volume_export(VolumeSpec(id="v2", size_gb=1), "compute-2")
    assert other.port != connection.port

    driver.volume_unexport(VolumeSpec(id="v1", size_gb=1))
    assert nbd_io(connection, "read 0 1M").returncode != 0
    path = driver.backend("file").volume_path("v1")
    read = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x42 0 1M", str(path)], capture_output=True,
                          text=True)
    assert "Pattern verification failed" not in read.stdout and read.returncode == 0
    driver.volume_unexport(VolumeSpec(id="v1", size_gb=1))  # not exported: fine


def test_a_dead_export_daemon_is_started_again(driver):
    driver.volume_create(VolumeSpec(id="v1", size_gb=1))
    first = driver.volume_export(VolumeSpec(id="v1", size_gb=1), "compute-2")
    daemon = export_daemon(driver.config, "v1")
    os.kill(daemon.pid(), signal.SIGKILL)
    for _ in range(100):
        if not daemon.running():
            break
        subprocess.run(["sleep", "0.05"])
    again = driver.volume_export(VolumeSpec(id="v1", size_gb=1), "compute-2")
    assert again.export == first.export and daemon.running()
    assert "read" in nbd_io(again, "read 0 1M").stdout


def test_nbd_needs_an_address_and_a_volume(data_dir, driver):
    unset = make_driver(data_dir)
    unset.volume_create(VolumeSpec(id="v1", size_gb=1))
    with pytest.raises(StorageError, match="set CLOUDMGR_NBD_ADDRESS"):
        unset.volume_export(VolumeSpec(id="v1", size_gb=1), "compute-2")
    with pytest.raises(StorageError, match="volume nope does not exist"):
        driver.volume_export(VolumeSpec(id="nope", size_gb=1), "compute-2")
    assert not export_daemon(driver.config, "nope").running()


def test_the_export_task_answers_with_the_connection(driver):
    driver.volume_create(VolumeSpec(id="v1", size_gb=1))
    reset_volume_driver(driver)
    try:
        answer = storage_tasks.volume_export(VolumeSpec(id="v1", size_gb=1).to_dict(), host="compute-2")
        missing = storage_tasks.volume_export(VolumeSpec(id="v9", size_gb=1).to_dict(), host="compute-2")
        stopped = storage_tasks.volume_unexport(VolumeSpec(id="v1", size_gb=1).to_dict())
    finally:
        reset_volume_driver()
    assert answer["ok"] and answer["connection"]["driver"] == "nbd" and answer["connection"]["export"] == "v1"
    assert not missing["ok"] and missing["error"] == "volume v9 does not exist"
    assert stopped["ok"] and not export_daemon(driver.config, "v1").running()
