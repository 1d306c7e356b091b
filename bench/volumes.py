#!/usr/bin/env python
"""Volume benchmark, the agent half: the storage backend and the libvirt driver called directly
(no API, no broker), on a private data dir under var/.

1. **Create from a 1 GiB image**: a copy-on-write clone (a qcow2 overlay on the pool's link to
   the cached image) against a full copy (``qemu-img convert``). The image is 1 GiB of non-zero
   data, so the copy has all of it to move. The first create also fills the image cache; that
   is timed apart.
2. **Attach and detach on a running guest** (the test guest, TCG): the libvirt call, then until
   the guest sees the disk (its console answers with the disk's serial); the detach call, which
   returns once the guest has released the device.
3. **Backup throughput** of a volume holding 1 GiB of data (the full copy from 1), beside ``cp``
   of that volume's file; an incremental backup of the unchanged volume (reads and hashes it all,
   stores nothing); a restore.

Each figure is the median and the range over ``--rounds`` runs. The machine is shared (2 cores):
run it several times and report the range. The image and volume data are in the page cache for
both the backup and ``cp``, so the comparison is of the paths, not of the disk.

    .venv/bin/python bench/volumes.py [--rounds 5] [--skip-guest]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agents import names  # noqa: E402
from agents.compute.libvirt_driver import LibvirtDriver  # noqa: E402
from agents.config import load_config  # noqa: E402
from agents.specs import (  # noqa: E402
    BackupSpec,
    DiskSpec,
    DomainSpec,
    ImageRef,
    VolumeAttachSpec,
    VolumeSpec,
)
from agents.storage import qemu_img  # noqa: E402
from agents.storage.volumes import LocalVolumeDriver  # noqa: E402
from agents.storage.volumes.config import load_volume_config  # noqa: E402
from agents.storage.volumes.file import FileBackend  # noqa: E402

GiB = 1 << 30
URI = os.environ.get("CLOUDMGR_LIBVIRT_URI", "qemu:///system")
TESTVM = Path(os.environ.get("CLOUDMGR_TESTVM_IMAGE", REPO / "var" / "build" / "testvm.qcow2"))


def figure(label: str, values: list[float], unit: str = "s") -> None:
    print(f"  {label:<44} median {statistics.median(values):8.3f} {unit}   "
          f"range {min(values):.3f} - {max(values):.3f} {unit}   (n={len(values)})")


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def make_image(path: Path) -> None:
    """1 GiB of non-zero data in a qcow2 file (written in 64 MiB stripes of a pattern)."""
    qemu_img.create(path, "qcow2", GiB)
    commands = []
    for n, offset in enumerate(range(0, GiB, 64 << 20)):
        commands += ["-c", f"write -P {n % 250 + 1} {offset} {64 << 20}"]
    subprocess.run(["qemu-io", "-f", "qcow2", *commands, str(path)], check=True, capture_output=True)


def bench_create(storage: LocalVolumeDriver, config, image: ImageRef, rounds: int) -> str:
    cow = storage.backend("file")
    copy = FileBackend(config, cow_images=False)
    print("create a 1 GiB volume from a 1 GiB image (file backend)")
    first = timed(lambda: cow.create(VolumeSpec(id="first", size_gb=1, image=image)))
    figure("first create (fills the image cache)", [first])
    cow_times, copy_times = [], []
    for n in range(rounds):
        cow_times.append(timed(lambda: cow.create(VolumeSpec(id=f"cow{n}", size_gb=1, image=image))))
        copy_times.append(timed(lambda: copy.create(VolumeSpec(id=f"copy{n}", size_gb=1, image=image))))
    figure("copy-on-write clone", cow_times)
    figure("full copy (qemu-img convert)", copy_times)
    for n in range(rounds):
        cow.delete(f"cow{n}")
        if n:
            copy.delete(f"copy{n}")
    cow.delete("first")
    return "copy0"


def bench_backup(storage: LocalVolumeDriver, config, volume_id: str, rounds: int) -> None:
    path = storage.backend("file").volume_path(volume_id)
    size = qemu_img.virtual_size(path, "qcow2")
    data = qemu_img.info(path, "qcow2")["actual-size"]
    print(f"backup of a volume with {data / GiB:.2f} GiB of data ({size / GiB:.0f} GiB virtual)")
    mib = size / (1 << 20)
    full, incremental, restore, cp = [], [], [], []
    scratch = config.backup_dir.parent / "cp-target"
    for n in range(rounds):
        full.append(timed(lambda: storage.backup_create(BackupSpec(id=f"b{n}", volume_id=volume_id))))
        incremental.append(timed(lambda: storage.backup_create(
            BackupSpec(id=f"i{n}", volume_id=volume_id, parent_id=f"b{n}"))))
        restore.append(timed(lambda: storage.backup_restore(
            BackupSpec(id=f"b{n}", volume_id=volume_id, restore_volume_id="restored"))))
        cp.append(timed(lambda: subprocess.run(["cp", str(path), str(scratch)], check=True)))
        scratch.unlink()
        storage.backup_delete(BackupSpec(id=f"i{n}", volume_id=volume_id))
        storage.backup_delete(BackupSpec(id=f"b{n}", volume_id=volume_id))
    figure("full backup", [mib / t for t in full], "MiB/s")
    figure("cp of the volume's file", [mib / t for t in cp], "MiB/s")
    figure("incremental backup, nothing changed", [mib / t for t in incremental], "MiB/s")
    figure("restore into a new volume", [mib / t for t in restore], "MiB/s")


def bench_attach(storage: LocalVolumeDriver, env: dict, rounds: int) -> None:
    import libvirt

    from tests.agents.test_volumes_guest import Console

    compute = LibvirtDriver(load_config(env))
    spec = DomainSpec(instance_id=str(uuid.uuid4()), display_name="volume bench", vcpus=1, memory_mib=128,
                      disks=[DiskSpec(name="root", size_gb=1, image=ImageRef(id="testvm", source=TESTVM.as_uri()))])
    conn = libvirt.open(URI)
    console = None
    print("attach and detach a 1 GiB volume on a running guest (virtio-blk hot-plug)")
    try:
        compute.spawn(spec)
        deadline = time.monotonic() + 300
        while "CLOUDMGR_TESTVM_DISKS" not in compute.console_log(spec.instance_id):
            if time.monotonic() > deadline:
                raise SystemExit("the test guest did not boot within 300 s")
            time.sleep(0.2)
        console = Console(conn.lookupByName(names.domain_name(spec.instance_id)))
        console.run("true")
        volume = str(uuid.uuid4())
        storage.volume_create(VolumeSpec(id=volume, size_gb=1))
        connection = storage.volume_export(VolumeSpec(id=volume, size_gb=1))
        attach_spec = VolumeAttachSpec(instance_id=spec.instance_id, volume_id=volume, device="vdb",
                                       connection=connection)
        calls, seen, detaches, gone = [], [], [], []
        for _ in range(rounds):
            start = time.perf_counter()
            compute.volume_attach(attach_spec)
            calls.append(time.perf_counter() - start)
            device, _ = console.wait_for_disk(volume)
            seen.append(time.perf_counter() - start)
            start = time.perf_counter()
            compute.volume_detach(attach_spec)
            detaches.append(time.perf_counter() - start)
            console.wait_until_gone(device)
            gone.append(time.perf_counter() - start)
        figure("attach call", calls)
        figure("attach -> the guest sees the disk", seen)
        figure("detach call (returns once released)", detaches)
        figure("detach -> the guest's console confirms", gone)
    finally:
        if console is not None:
            console.close()
        compute.destroy(spec.instance_id)
        compute.close()
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-guest", action="store_true", help="skip the attach/detach part (no libvirt)")
    args = parser.parse_args()

    data_dir = REPO / "var" / f"bv-{uuid.uuid4().hex[:6]}"
    data_dir.mkdir(mode=0o755, parents=True)
    env = {"CLOUDMGR_DATA_DIR": str(data_dir), "CLOUDMGR_HOSTNAME": "bench-host", "CLOUDMGR_LIBVIRT_URI": URI}
    config = load_volume_config(env)
    storage = LocalVolumeDriver(config)
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    try:
        image_path = data_dir / "image-1g.qcow2"
        make_image(image_path)
        image = ImageRef(id="bench-1g", source=image_path.as_uri())
        full_copy = bench_create(storage, config, image, args.rounds)
        bench_backup(storage, config, full_copy, args.rounds)
        if not args.skip_guest:
            bench_attach(storage, env, args.rounds)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
