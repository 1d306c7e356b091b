"""Identify a disk image from its content, in pure Python, before qemu-img ever touches it.

Crafted images can make qemu-img (and QEMU) open host files: a qcow2 with a backing file or an
external data file (OSSA-2024-001). Such files are refused here.
"""

import struct
from dataclasses import dataclass
from typing import BinaryIO

from cloudmgr.exceptions import ValidationError

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_INCOMPAT_DATA_FILE = 1 << 2


@dataclass
class Inspection:
    disk_format: str
    virtual_size: int


def inspect(f: BinaryIO, *, size: int) -> Inspection:
    f.seek(0)
    header = f.read(512)
    f.seek(0)
    if header[:4] == QCOW2_MAGIC:
        return _inspect_qcow2(header)
    return Inspection(disk_format="raw", virtual_size=size)


def _inspect_qcow2(header: bytes) -> Inspection:
    if len(header) < 72:
        raise ValidationError("The qcow2 header is truncated.")
    version, backing_file_offset, _backing_size, _cluster_bits, virtual_size = struct.unpack(">IQIIQ", header[4:32])
    if version not in (2, 3):
        raise ValidationError(f"Unsupported qcow2 version {version}.")
    if backing_file_offset:
        raise ValidationError("qcow2 images with a backing file are not allowed.")
    if version == 3:
        (incompatible_features,) = struct.unpack(">Q", header[72:80])
        if incompatible_features & QCOW2_INCOMPAT_DATA_FILE:
            raise ValidationError("qcow2 images with an external data file are not allowed.")
    return Inspection(disk_format="qcow2", virtual_size=virtual_size)


def inspect_as(f: BinaryIO, *, size: int, disk_format: str) -> Inspection:
    """Inspect and require the declared format to match the content."""
    found = inspect(f, size=size)
    if found.disk_format != disk_format:
        raise ValidationError(f"The image content is {found.disk_format}, not the declared {disk_format}.")
    return found
