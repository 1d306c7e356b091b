"""Crafted disk images for the image service's tests, made in pure Python or by qemu-img (helpers, no tests)."""

import struct
import subprocess
from pathlib import Path

MiB = 1 << 20


def qemu_img(path: Path, fmt: str, size: str = "16M", *options: str) -> bytes:
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *options, str(path), size], check=True)
    return path.read_bytes()


def qcow2_with_backing(tmp: Path, backing: str = "/etc/passwd") -> bytes:
    return qemu_img(tmp / "backing.qcow2", "qcow2", "16M", "-b", backing, "-F", "raw")


def qcow2_with_data_file(tmp: Path) -> bytes:
    return qemu_img(tmp / "datafile.qcow2", "qcow2", "16M", "-o", f"data_file={tmp / 'data.raw'}")


def vmdk_flat_descriptor(path: str = "/etc/shadow") -> bytes:
    return (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n\n# Extent description\n'
        f'RW 2048 FLAT "{path}" 0\n\n# The Disk Data Base\n#DDB\n'
        'ddb.virtualHWVersion = "4"\n'
    ).encode()


def sparse_vmdk_with_flat_extent(tmp: Path) -> bytes:
    """A real monolithicSparse VMDK whose embedded descriptor is rewritten to name a host file."""
    data = bytearray(qemu_img(tmp / "sparse.vmdk", "vmdk", "16M"))
    desc_offset = struct.unpack_from("<Q", data, 28)[0] * 512
    end = data.index(b"\0", desc_offset)
    text = data[desc_offset:end].decode()
    lines = [('RW 32768 FLAT "/etc/shadow" 0' if line.startswith("RW ") else line) for line in text.splitlines()]
    new = "\n".join(lines).encode()
    data[desc_offset : desc_offset + len(new)] = new
    data[desc_offset + len(new) : end] = b"\0" * (end - desc_offset - len(new))
    return bytes(data)


def truncated_qcow2(tmp: Path, length: int = 48) -> bytes:
    return qemu_img(tmp / "whole.qcow2", "qcow2", "16M")[:length]
