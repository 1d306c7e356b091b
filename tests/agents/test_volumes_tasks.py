"""The volume task entry points (storage and compute), the fake drivers the control plane's unit
tests run on, the volume disk's XML, and the volume settings."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest

from agents import names, tasks
from agents.compute.designer import design_volume_disk
from agents.compute.driver import ComputeError
from agents.config import ConfigError
from agents.specs import BackupSpec, ImageRef, SnapshotSpec, VolumeAttachSpec, VolumeConnection, VolumeSpec
from agents.storage import tasks as storage_tasks
from agents.storage.volumes import get_volume_driver, reset_volume_driver
from agents.storage.volumes.config import load_volume_config
from agents.storage.volumes.fake import FakeVolumeDriver
from agents.worker import app

STORAGE_TASKS = {
    names.TASK_VOLUME_CREATE: storage_tasks.volume_create,
    names.TASK_VOLUME_DELETE: storage_tasks.volume_delete,
    names.TASK_VOLUME_EXTEND: storage_tasks.volume_extend,
    names.TASK_VOLUME_EXPORT: storage_tasks.volume_export,
    names.TASK_VOLUME_UNEXPORT: storage_tasks.volume_unexport,
    names.TASK_SNAPSHOT_CREATE: storage_tasks.snapshot_create,
    names.TASK_SNAPSHOT_DELETE: storage_tasks.snapshot_delete,
    names.TASK_BACKUP_CREATE: storage_tasks.backup_create,
    names.TASK_BACKUP_RESTORE: storage_tasks.backup_restore,
    names.TASK_BACKUP_DELETE: storage_tasks.backup_delete,
}
COMPUTE_TASKS = {
    names.TASK_VOLUME_ATTACH: tasks.volume_attach,
    names.TASK_VOLUME_DETACH: tasks.volume_detach,
    names.TASK_VOLUME_RESIZED: tasks.volume_resized,
}
RESULT_KEYS = {"task", "kind", "id", "volume_id", "host", "ok", "error"}


@pytest.fixture
def storage():
    driver = FakeVolumeDriver()
    reset_volume_driver(driver)
    yield driver
    reset_volume_driver()


def test_every_volume_task_name_is_registered():
    for name, task in {**STORAGE_TASKS, **COMPUTE_TASKS}.items():
        assert task.name == name and app.tasks[name] is task._get_current_object()
    assert {n for n in vars(names).values() if isinstance(n, str) and n.startswith("agents.")
            and any(w in n for w in ("volume", "snapshot_", "backup"))} == set(STORAGE_TASKS) | set(COMPUTE_TASKS)
    assert app.tasks[names.TASK_VOLUME_EXPORT].ignore_result is False  # a synchronous call


def test_the_storage_tasks_on_the_fake_driver(storage):
    created = storage_tasks.volume_create(VolumeSpec(id="v1", size_gb=1, image=ImageRef(id="i", source="x")).to_dict())
    assert set(created) == RESULT_KEYS | {"size_gb"}
    assert created == {**created, "task": names.TASK_VOLUME_CREATE, "kind": "volume", "id": "v1", "volume_id": "v1",
                       "ok": True, "error": None, "size_gb": 1}
    assert storage_tasks.volume_extend(VolumeSpec(id="v1", size_gb=3).to_dict())["size_gb"] == 3
    shrink = storage_tasks.volume_extend(VolumeSpec(id="v1", size_gb=2).to_dict())
    assert shrink["ok"] is False and "cannot shrink" in shrink["error"]

    snap = storage_tasks.snapshot_create(SnapshotSpec(id="s1", volume_id="v1").to_dict())
    assert snap["kind"] == "snapshot" and snap["id"] == "s1" and snap["volume_id"] == "v1" and snap["size_gb"] == 3
    small = storage_tasks.volume_create(VolumeSpec(id="v2", size_gb=1, source_snapshot_id="s1").to_dict())
    assert small["ok"] is False and "smaller than its source" in small["error"]

    backup = storage_tasks.backup_create(BackupSpec(id="b1", volume_id="v1").to_dict())
    assert backup["kind"] == "backup" and backup["ok"] and backup["incremental"] is False
    child = storage_tasks.backup_create(BackupSpec(id="b2", volume_id="v1", parent_id="b1").to_dict())
    assert child["incremental"] is True
    refused = storage_tasks.backup_delete(BackupSpec(id="b1", volume_id="v1").to_dict())
    assert refused["ok"] is False and "(b2)" in refused["error"]
    restored = storage_tasks.backup_restore(BackupSpec(id="b1", volume_id="v1", restore_volume_id="v9").to_dict())
    assert restored["ok"] and restored["restore_volume_id"] == "v9" and storage.volumes["v9"].size_gb == 3

    connection = storage_tasks.volume_export(VolumeSpec(id="v1", size_gb=3).to_dict(), host="compute-9")
    assert connection["connection"]["driver"] == "nbd" and "v1" in storage.exports
    assert storage_tasks.volume_delete(VolumeSpec(id="v1", size_gb=3).to_dict())["ok"]
    assert storage_tasks.volume_delete(VolumeSpec(id="v1", size_gb=3).to_dict())["ok"]  # idempotent
    assert "v1" not in storage.volumes and "v1" not in storage.exports


def test_injected_failures_bad_specs_and_unknown_versions_are_results(storage):
    storage.fail_next("volume_create", "the pool is full")
    failed = storage_tasks.volume_create(VolumeSpec(id="v1", size_gb=1).to_dict())
    assert failed == {**failed, "ok": False, "error": "the pool is full", "id": "v1"}
    assert "v1" not in storage.volumes
    assert storage_tasks.volume_create(VolumeSpec(id="v1", size_gb=1).to_dict())["ok"]  # the next one works

    bad = storage_tasks.volume_create({"id": "v2"})
    assert bad["ok"] is False and bad["error"].startswith("invalid volume spec") and bad["id"] == "v2"
    newer = storage_tasks.snapshot_create({**SnapshotSpec(id="s1", volume_id="v1").to_dict(), "version": 99})
    assert newer["ok"] is False and "spec version 99 is not supported" in newer["error"]
    backend = storage_tasks.volume_create(VolumeSpec(id="v3", size_gb=1, backend="ceph").to_dict())
    assert backend["ok"] is False and "unknown volume backend 'ceph'" in backend["error"]
    unsafe = storage_tasks.volume_delete(VolumeSpec(id="../x", size_gb=1).to_dict())
    assert unsafe["ok"] is False and "invalid id" in unsafe["error"]


def test_the_driver_follows_the_configuration(monkeypatch):
    reset_volume_driver()
    monkeypatch.setenv("CLOUDMGR_VOLUME_DRIVER", "fake")
    from agents.storage.volumes.config import get_volume_config

    get_volume_config.cache_clear()
    try:
        assert isinstance(get_volume_driver(), FakeVolumeDriver)
    finally:
        get_volume_config.cache_clear()
        reset_volume_driver()


def attach_spec(**overrides) -> VolumeAttachSpec:
    fields = {"instance_id": str(uuid.uuid4()), "volume_id": "0d7f3d52-1d83-4b3e-9d65-0c3a1e5d7b11",
              "device": "vdb", "connection": VolumeConnection(driver="file", path="/pool/volume-x.qcow2",
                                                              format="qcow2")}
    fields.update(overrides)
    return VolumeAttachSpec(**fields)


def canonical(xml: str) -> str:
    return ET.canonicalize(xml_data=xml, strip_text=True)


def test_volume_disk_xml_for_each_connection():
    file_disk = design_volume_disk(attach_spec(), disk_cache_mode="none").to_xml()
    assert canonical(file_disk) == canonical(
        '<disk type="file" device="disk"><driver name="qemu" type="qcow2" discard="unmap" cache="none"/>'
        '<source file="/pool/volume-x.qcow2"/><target dev="vdb" bus="virtio"/>'
        '<serial>0d7f3d52-1d83-4b3e-9d65-0c3a1e5d7b11</serial></disk>')
    block = design_volume_disk(attach_spec(device="vdc", read_only=True, connection=VolumeConnection(
        driver="block", path="/dev/vg/volume-x")), disk_cache_mode="writethrough").to_xml()
    assert canonical(block) == canonical(
        '<disk type="block" device="disk"><driver name="qemu" type="raw" discard="unmap" cache="writethrough"/>'
        '<source dev="/dev/vg/volume-x"/><target dev="vdc" bus="virtio"/><readonly/>'
        '<serial>0d7f3d52-1d83-4b3e-9d65-0c3a1e5d7b11</serial></disk>')
    nbd = design_volume_disk(attach_spec(connection=VolumeConnection(
        driver="nbd", host="192.0.2.7", port=10810, export="x"))).to_xml()
    assert canonical(nbd) == canonical(
        '<disk type="network" device="disk"><driver name="qemu" type="raw" discard="unmap" cache="none"/>'
        '<source protocol="nbd" name="x"><host name="192.0.2.7" port="10810"/></source>'
        '<target dev="vdb" bus="virtio"/><serial>0d7f3d52-1d83-4b3e-9d65-0c3a1e5d7b11</serial></disk>')


@pytest.mark.parametrize("overrides, message", [
    ({"connection": None}, "needs its connection"),
    ({"device": "vda"}, "invalid volume device 'vda'"),
    ({"device": "sdb"}, "invalid volume device 'sdb'"),
    ({"volume_id": "a/b"}, "invalid volume id"),
    ({"connection": VolumeConnection(driver="iscsi", path="/x")}, "unknown volume connection 'iscsi'"),
    ({"connection": VolumeConnection(driver="file", path="relative.qcow2")}, "needs an absolute path"),
    ({"connection": VolumeConnection(driver="file", path="/x", format="vmdk")}, "unsupported volume format"),
    ({"connection": VolumeConnection(driver="nbd", host="h")}, "needs a host, a port and an export"),
])
def test_invalid_attachments_are_refused(overrides, message):
    with pytest.raises(ComputeError, match=message):
        design_volume_disk(attach_spec(**overrides))


def test_volume_disks_in_a_domain_keep_their_devices():
    """A server booted from a volume has it as vda; a volume attached as vdc stays vdc when the
    domain is defined again (resize, rescue), and the other disks take the free names."""
    from pathlib import Path

    from agents.compute.designer import design_guest
    from agents.config import InstancePaths
    from agents.specs import DiskSpec, DomainSpec

    volume = "0d7f3d52-1d83-4b3e-9d65-0c3a1e5d7b11"
    root = DiskSpec(name="root", size_gb=1, connection=VolumeConnection(driver="block", path="/dev/vg/volume-r"))
    attached = DiskSpec(name=volume, size_gb=1, device="vdc", connection=VolumeConnection(
        driver="nbd", host="192.0.2.7", port=10810, export=volume))
    rescue = DiskSpec(name="rescue", size_gb=1, image=ImageRef(id="img", source="file:///x"))
    paths = InstancePaths(Path("/var/lib/cloudmgr/instances/i1"))

    def disks(spec):
        xml = ET.fromstring(design_guest(spec, paths).to_xml())
        return [(d.get("type"), d.find("target").get("dev"), d.findtext("serial")) for d in xml.iter("disk")]

    spec = DomainSpec(instance_id="i1", display_name="vm", vcpus=1, memory_mib=128, disks=[attached, root])
    assert disks(spec) == [("block", "vda", "root"), ("network", "vdc", volume)]
    spec.disks.append(rescue)
    spec.rescue = True
    assert disks(spec) == [("file", "vda", "rescue"), ("block", "vdb", "root"), ("network", "vdc", volume)]
    attached.device = "vdb"  # taken by the root disk in rescue mode: the volume moves, nothing clashes
    assert disks(spec) == [("file", "vda", "rescue"), ("block", "vdc", "root"), ("network", "vdb", volume)]
    assert DiskSpec.from_dict(root.__dict__ | {"connection": root.connection.__dict__}) == root


def test_the_compute_volume_tasks_on_the_fake_driver(fake_driver):
    from agents.specs import DiskSpec, DomainSpec

    instance = str(uuid.uuid4())
    fake_driver.spawn(DomainSpec(instance_id=instance, display_name="vm", vcpus=1, memory_mib=128,
                                 disks=[DiskSpec(name="root", size_gb=1)]))
    spec = attach_spec(instance_id=instance)
    done = tasks.volume_attach(spec.to_dict())
    assert done == {**done, "task": names.TASK_VOLUME_ATTACH, "kind": "attachment", "id": spec.volume_id,
                    "volume_id": spec.volume_id, "instance_id": instance, "device": "vdb", "ok": True, "error": None}
    assert fake_driver.attached_volumes[instance] == {spec.volume_id: "vdb"}
    assert tasks.volume_attach(spec.to_dict())["ok"]  # attached already: fine
    clash = tasks.volume_attach(attach_spec(instance_id=instance, volume_id="other").to_dict())
    assert clash["ok"] is False and "device vdb of instance" in clash["error"]

    fake_driver.volume_sizes[spec.volume_id] = 2 << 30
    assert tasks.volume_resized(spec.to_dict())["size"] == 2 << 30
    spec.size_gb = 3
    assert tasks.volume_resized(spec.to_dict())["size"] == 3 << 30
    fake_driver.fail_next("volume_detach", "the guest did not release volume x (vdb) within 30 s")
    stuck = tasks.volume_detach(spec.to_dict())
    assert stuck["ok"] is False and "did not release" in stuck["error"]
    assert tasks.volume_detach(spec.to_dict())["ok"] and fake_driver.attached_volumes[instance] == {}
    gone = tasks.volume_resized(spec.to_dict())
    assert gone["ok"] is False and "is not attached" in gone["error"]

    missing = tasks.volume_attach(attach_spec().to_dict())
    assert missing["ok"] is False and "has no domain on this host" in missing["error"]
    bad = tasks.volume_detach({"instance_id": instance})
    assert bad["ok"] is False and bad["error"].startswith("invalid attachment spec") and bad["instance_id"] == instance


def test_volume_settings(tmp_path):
    config = load_volume_config({"CLOUDMGR_DATA_DIR": str(tmp_path)})
    assert config.volume_dir == tmp_path / "volumes" and config.backup_dir == tmp_path / "backups"
    assert config.volume_group is None and config.nbd_address is None and config.nbd_ports == (10809, 10999)
    assert config.driver == "real" and config.thin_pool == "cloudmgr-thinpool"
    custom = load_volume_config({"CLOUDMGR_DATA_DIR": str(tmp_path), "CLOUDMGR_VOLUME_GROUP": "vg0",
                                 "CLOUDMGR_THIN_POOL": "pool", "CLOUDMGR_NBD_ADDRESS": "::1",
                                 "CLOUDMGR_NBD_PORTS": "20000-20010", "CLOUDMGR_BACKUP_DIR": str(tmp_path / "b")})
    assert (custom.volume_group, custom.thin_pool, custom.nbd_address, custom.nbd_ports) == (
        "vg0", "pool", "::1", (20000, 20010))
    assert custom.backup_dir == tmp_path / "b"
    for env, message in [({"CLOUDMGR_VOLUME_DRIVER": "ceph"}, "CLOUDMGR_VOLUME_DRIVER"),
                         ({"CLOUDMGR_VOLUME_GROUP": "-vg"}, "not a valid LVM name"),
                         ({"CLOUDMGR_NBD_ADDRESS": "storage.example"}, "must be an IP address"),
                         ({"CLOUDMGR_NBD_PORTS": "10-5"}, "not a range of TCP ports"),
                         ({"CLOUDMGR_NBD_PORTS": "a-b"}, "a port or a range")]:
        with pytest.raises(ConfigError, match=message):
            load_volume_config({"CLOUDMGR_DATA_DIR": str(tmp_path), **env})
