"""Identify a disk image from its content, in pure Python, before qemu-img ever touches it.

Crafted images can make qemu-img (and QEMU) open host files: a qcow2 with a backing file or an
external data file, a VMDK whose descriptor names extents elsewhere on the host, a differencing
VHD/VHDX/VDI that names its parent (OSSA-2024-001, CVE-2022-47951). Such files are refused here,
as is content that does not match the declared `disk_format`, a header that is cut short, and a
virtual size nobody means.

Two entry points:

- `sniff(header, declared=...)` looks at the first bytes of an upload while it streams (the
  first `HEADER_BYTES`, or all of a smaller file) and refuses early what is already clear there;
- `inspect_as(f, size=..., disk_format=...)` inspects the whole stored file (random access), and
  its answer (format, virtual size) is what the image records. It runs before an image becomes
  active; qemu-img runs only after it passed (apps/images/qemu.py).

Recognised: raw, qcow2 (v2, v3), vmdk (monolithicSparse, streamOptimized), vdi, vhd (fixed,
dynamic), vhdx, iso (ISO 9660, UDF). Also recognised, to refuse them: qcow v1, QED, LUKS, VMDK
text descriptors and COWD (ESX) sparse files.
"""

from __future__ import annotations

import re
import struct
import uuid
from dataclasses import dataclass
from typing import BinaryIO

from cloudmgr.exceptions import ValidationError

# Enough to identify every format: ISO 9660 and UDF put their signatures at 32 KiB.
HEADER_BYTES = 64 * 1024
# 64 TiB: far beyond any real image; a crafted header asking for more is refused.
MAX_VIRTUAL_SIZE = 64 << 40
SECTOR = 512

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_INCOMPAT_CORRUPT = 1 << 1
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
QCOW2_INCOMPAT_KNOWN = 0b11111  # dirty, corrupt, external data file, compression type, extended L2
QCOW2_EXT_END = 0x00000000
QCOW2_EXT_BACKING_FORMAT = 0xE2792ACA
QCOW2_EXT_DATA_FILE = 0x44415441

VMDK_SPARSE_MAGIC = b"KDMV"
VMDK_COWD_MAGIC = b"COWD"
VMDK_CREATE_TYPES = ("monolithicSparse", "streamOptimized")
VMDK_MAX_DESCRIPTOR = 1 << 20

VDI_SIGNATURE = 0xBEDA107F
VDI_TYPE_NORMAL, VDI_TYPE_FIXED = 1, 2

VHD_COOKIE = b"conectix"
VHD_FIXED, VHD_DYNAMIC, VHD_DIFFERENCING = 2, 3, 4

VHDX_SIGNATURE = b"vhdxfile"
VHDX_REGION_TABLE_OFFSETS = (192 * 1024, 256 * 1024)
VHDX_METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
VHDX_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B").bytes_le
VHDX_VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8").bytes_le
VHDX_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D87D8489A7AA").bytes_le

ISO_DESCRIPTOR_OFFSET = 32768  # 16 sectors of 2048 bytes (the "system area") come first
ISO_IDENTIFIERS = (b"CD001", b"BEA01", b"NSR02", b"NSR03")

QED_MAGIC = b"QED\x00"
LUKS_MAGIC = b"LUKS\xba\xbe"



class InspectionError(ValidationError):
    """The content is refused; the message says why."""


@dataclass
class Inspection:
    disk_format: str
    virtual_size: int


class _Source:
    """Bytes to inspect: a whole seekable file, or only the first bytes of a stream (`complete`
    False), in which case checks that need bytes beyond them are left to the full inspection."""

    def __init__(self, *, data: bytes | None = None, f: BinaryIO | None = None, size: int | None = None):
        self._data, self._f = data, f
        self.size = size if size is not None else len(data or b"")
        self.complete = f is not None or size is not None

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0:
            return b""
        if self._f is not None:
            self._f.seek(offset)
            return self._f.read(length)
        return self._data[offset : offset + length]

    def available(self, offset: int, length: int) -> bool:
        """Are these bytes inside what we hold?"""
        end = offset + length
        return end <= self.size if self.complete else end <= len(self._data or b"")

    def need(self, offset: int, length: int, what: str) -> bytes | None:
        """The bytes, or None when we only hold the start of a stream; refused as truncated when
        the whole file is there and they are not."""
        if self.available(offset, length):
            return self.read(offset, length)
        if self.complete:
            raise InspectionError(f"The image is truncated: its {what} is incomplete.")
        return None


# --- identification ---------------------------------------------------------------------------


def _vmdk_text(head: bytes) -> bool:
    """A VMDK text descriptor, as qemu probes one: after comment lines and blanks, `version=N`."""
    if head.startswith(b"# Disk DescriptorFile"):
        return True
    for line in head.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(b"#"):
            continue
        return re.match(rb"version\s*=\s*[123]\s*$", stripped) is not None
    return False


def _candidates(src: _Source) -> list[str]:
    """Every format whose signature the content carries (empty: raw)."""
    head = src.read(0, 512)
    found = []
    if head[:4] == QCOW2_MAGIC:
        found.append("qcow2")
    if head[:4] in (VMDK_SPARSE_MAGIC, VMDK_COWD_MAGIC) or _vmdk_text(head):
        found.append("vmdk")
    if len(head) >= 0x44 and struct.unpack_from("<I", head, 0x40)[0] == VDI_SIGNATURE:
        found.append("vdi")
    if head[:8] == VHD_COOKIE:
        found.append("vhd")
    if head[:8] == VHDX_SIGNATURE:
        found.append("vhdx")
    if head[:4] == QED_MAGIC:
        found.append("qed")
    if head[:6] == LUKS_MAGIC:
        found.append("luks")
    if src.read(ISO_DESCRIPTOR_OFFSET + 1, 5) in ISO_IDENTIFIERS:
        found.append("iso")
    return found


def _identify(src: _Source) -> str:
    found = _candidates(src)
    if len(found) > 1:
        raise InspectionError(f"The image content matches several formats ({', '.join(found)}) and is refused.")
    if found == ["qed"]:
        raise InspectionError("QED images are not supported.")
    if found == ["luks"]:
        raise InspectionError("LUKS-encrypted images are not supported.")
    return found[0] if found else "raw"


def _check_declared(found: str, declared: str | None) -> None:
    if declared is None or found == declared:
        return
    if declared == "raw" and found == "iso":
        return  # an ISO is a raw sequence of sectors; booting it as a raw disk is harmless
    raise InspectionError(f"The image content is {found}, not the declared {declared}.")


def _check_virtual_size(virtual_size: int, fmt: str) -> int:
    if virtual_size <= 0:
        raise InspectionError(f"The {fmt} image declares a virtual size of {virtual_size} bytes.")
    if virtual_size > MAX_VIRTUAL_SIZE:
        raise InspectionError(
            f"The {fmt} image declares a virtual size of {virtual_size} bytes, more than the "
            f"{MAX_VIRTUAL_SIZE >> 40} TiB allowed."
        )
    return virtual_size


# --- formats ----------------------------------------------------------------------------------


def _qcow2(src: _Source) -> int | None:
    head = src.need(0, 72, "qcow2 header")
    if head is None:
        return None
    (version,) = struct.unpack_from(">I", head, 4)
    if version not in (2, 3):
        raise InspectionError(f"Unsupported qcow2 version {version}.")
    backing_offset, backing_size, cluster_bits, virtual_size, crypt_method, l1_size, l1_offset, refcount_offset = (
        struct.unpack_from(">QIIQIIQQ", head, 8)
    )
    if backing_offset or backing_size:
        raise InspectionError("qcow2 images with a backing file are not allowed.")
    if not 9 <= cluster_bits <= 21:
        raise InspectionError(f"The qcow2 header is invalid (cluster bits {cluster_bits}).")
    if crypt_method:
        raise InspectionError("Encrypted qcow2 images are not supported.")
    header_length = 72
    if version == 3:
        v3 = src.need(72, 32, "qcow2 header")
        if v3 is None:
            return None
        incompatible, _compatible, _autoclear, _refcount_order, header_length = struct.unpack_from(">QQQII", v3, 0)
        if incompatible & QCOW2_INCOMPAT_DATA_FILE:
            raise InspectionError("qcow2 images with an external data file are not allowed.")
        if incompatible & QCOW2_INCOMPAT_CORRUPT:
            raise InspectionError("The qcow2 image is marked corrupt.")
        if incompatible & ~QCOW2_INCOMPAT_KNOWN:
            raise InspectionError("The qcow2 image uses unknown incompatible features.")
        if header_length < 104:
            raise InspectionError(f"The qcow2 header is invalid (header length {header_length}).")
    _qcow2_extensions(src, header_length, 1 << cluster_bits)
    _check_virtual_size(virtual_size, "qcow2")
    cluster = 1 << cluster_bits
    if l1_offset % cluster or refcount_offset % cluster:
        raise InspectionError("The qcow2 header is invalid (misaligned tables).")
    if src.complete:
        if l1_size and l1_offset + 8 * l1_size > src.size:
            raise InspectionError("The image is truncated: its qcow2 L1 table is incomplete.")
        if refcount_offset + cluster > src.size:
            raise InspectionError("The image is truncated: its qcow2 refcount table is incomplete.")
    return virtual_size


def _qcow2_extensions(src: _Source, offset: int, cluster: int) -> None:
    """Header extensions follow the header, within the first cluster; one of them can name an
    external data file."""
    for _ in range(64):
        if offset + 8 > cluster:
            raise InspectionError("The qcow2 header extensions run past the header cluster.")
        raw = src.need(offset, 8, "qcow2 header extension")
        if raw is None:
            return
        ext_type, length = struct.unpack(">II", raw)
        if ext_type == QCOW2_EXT_END:
            return
        if ext_type == QCOW2_EXT_DATA_FILE:
            raise InspectionError("qcow2 images with an external data file are not allowed.")
        if ext_type == QCOW2_EXT_BACKING_FORMAT:
            raise InspectionError("qcow2 images with a backing file are not allowed.")
        offset += 8 + ((length + 7) & ~7)
    raise InspectionError("The qcow2 image has too many header extensions.")


def _vmdk(src: _Source) -> int | None:
    head = src.read(0, 512)
    if head[:4] == VMDK_COWD_MAGIC:
        raise InspectionError("ESX (COWD) sparse VMDK images are not supported.")
    if head[:4] != VMDK_SPARSE_MAGIC:
        raise InspectionError(
            "VMDK descriptor files refer to other files (their extents) and are not allowed; upload a "
            "monolithicSparse or streamOptimized VMDK."
        )
    head = src.need(0, 80, "VMDK header")
    if head is None:
        return None
    version, _flags, capacity, _grain, desc_offset, desc_size = struct.unpack_from("<IIQQQQ", head, 4)
    if version not in (1, 2, 3):
        raise InspectionError(f"Unsupported VMDK version {version}.")
    if not desc_offset or not desc_size:
        raise InspectionError("The VMDK image has no embedded descriptor.")
    if desc_size * SECTOR > VMDK_MAX_DESCRIPTOR:
        raise InspectionError("The VMDK descriptor is too large.")
    descriptor = src.need(desc_offset * SECTOR, desc_size * SECTOR, "VMDK descriptor")
    if descriptor is not None:
        _vmdk_descriptor(descriptor.split(b"\0", 1)[0])
    return _check_virtual_size(capacity * SECTOR, "vmdk")


_VMDK_EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)(?:\s+"([^"]*)")?(?:\s+(\d+))?\s*$')


def _vmdk_descriptor(text: bytes) -> None:
    try:
        lines = text.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise InspectionError("The VMDK descriptor is not ASCII text.") from None
    create_type, extents = None, []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep and key.strip() == "createType":
            create_type = value.strip().strip('"')
        elif sep and key.strip() == "parentCID" and value.strip().lower() != "ffffffff":
            raise InspectionError("VMDK images that refer to a parent image are not allowed.")
        elif sep and key.strip().startswith("ddb.parentFileNameHint"):
            raise InspectionError("VMDK images that refer to a parent image are not allowed.")
        elif line.startswith(("RW", "RDONLY", "NOACCESS")):
            extents.append(line)
    if create_type not in VMDK_CREATE_TYPES:
        raise InspectionError(
            f"VMDK images of type {create_type or 'unknown'} are not allowed; use "
            f"{' or '.join(VMDK_CREATE_TYPES)}."
        )
    if len(extents) != 1:
        raise InspectionError("The VMDK descriptor must name exactly one extent, the file itself.")
    match = _VMDK_EXTENT.match(extents[0])
    if match is None or match.group(3) != "SPARSE":
        raise InspectionError("The VMDK descriptor names an extent outside the file, which is not allowed.")


def _vdi(src: _Source) -> int | None:
    head = src.need(0, 376, "VDI header")
    if head is None:
        return None
    (image_type,) = struct.unpack_from("<I", head, 0x4C)
    if image_type not in (VDI_TYPE_NORMAL, VDI_TYPE_FIXED):
        raise InspectionError("VDI images of this type (undo or differencing) are not allowed.")
    (virtual_size,) = struct.unpack_from("<Q", head, 0x170)
    return _check_virtual_size(virtual_size, "vdi")


def _vhd_footer(footer: bytes) -> int:
    checksum = struct.unpack_from(">I", footer, 64)[0]
    computed = ~(sum(footer[:64]) + sum(footer[68:512])) & 0xFFFFFFFF
    if checksum != computed:
        raise InspectionError("The VHD footer is corrupt (bad checksum).")
    (disk_type,) = struct.unpack_from(">I", footer, 60)
    if disk_type == VHD_DIFFERENCING:
        raise InspectionError("Differencing VHD images (which refer to a parent) are not allowed.")
    if disk_type not in (VHD_FIXED, VHD_DYNAMIC):
        raise InspectionError(f"Unsupported VHD disk type {disk_type}.")
    (current_size,) = struct.unpack_from(">Q", footer, 48)
    return _check_virtual_size(current_size, "vhd")


def _vhd(src: _Source) -> int | None:
    head = src.read(0, 512)
    if head[:8] == VHD_COOKIE:  # a dynamic disk: a copy of the footer comes first
        footer = src.need(0, 512, "VHD footer")
        return None if footer is None else _vhd_footer(footer)
    if not src.complete:
        return None  # a fixed disk: the footer is at the end
    if src.size < 512 or src.read(src.size - 512, 8) != VHD_COOKIE:
        raise InspectionError("The image content is raw, not the declared vhd (no VHD footer).")
    return _vhd_footer(src.read(src.size - 512, 512))


def _vhdx(src: _Source) -> int | None:
    for table_offset in VHDX_REGION_TABLE_OFFSETS:
        table = src.need(table_offset, 64 * 1024, "VHDX region table")
        if table is None:
            return None
        if table[:4] == b"regi":
            break
    else:
        raise InspectionError("The VHDX region table is missing.")
    (count,) = struct.unpack_from("<I", table, 8)
    if count > 2047:
        raise InspectionError("The VHDX region table is invalid.")
    metadata = None
    for i in range(count):
        guid, offset, length, _required = struct.unpack_from("<16sQII", table, 16 + 32 * i)
        if guid == VHDX_METADATA_REGION:
            metadata = (offset, length)
    if metadata is None:
        raise InspectionError("The VHDX metadata region is missing.")
    region_offset, region_length = metadata
    header = src.need(region_offset, 32, "VHDX metadata table")
    if header is None:
        return None
    if header[:8] != b"metadata":
        raise InspectionError("The VHDX metadata table is invalid.")
    (entries,) = struct.unpack_from("<H", header, 10)
    if entries > 2047:
        raise InspectionError("The VHDX metadata table is invalid.")
    table = src.need(region_offset + 32, 32 * entries, "VHDX metadata table")
    if table is None:
        return None
    virtual_size = None
    for i in range(entries):
        item, offset, length, _flags = struct.unpack_from("<16sIII", table, 32 * i)
        if item == VHDX_PARENT_LOCATOR:
            raise InspectionError("Differencing VHDX images (which refer to a parent) are not allowed.")
        if offset + length > region_length:
            raise InspectionError("The VHDX metadata table is invalid.")
        if item == VHDX_FILE_PARAMETERS:
            params = src.need(region_offset + offset, 8, "VHDX file parameters")
            if params is not None and struct.unpack_from("<I", params, 4)[0] & 0b10:
                raise InspectionError("Differencing VHDX images (which refer to a parent) are not allowed.")
        if item == VHDX_VIRTUAL_DISK_SIZE:
            value = src.need(region_offset + offset, 8, "VHDX virtual disk size")
            if value is not None:
                (virtual_size,) = struct.unpack("<Q", value)
    if virtual_size is None:
        if src.complete:
            raise InspectionError("The VHDX image does not declare its virtual size.")
        return None
    return _check_virtual_size(virtual_size, "vhdx")


def _iso(src: _Source) -> int | None:
    # qemu reads an ISO as raw sectors: its virtual size is its size.
    return src.size if src.complete else None


def _raw(src: _Source) -> int | None:
    return src.size if src.complete else None


_INSPECTORS = {
    "raw": _raw,
    "qcow2": _qcow2,
    "vmdk": _vmdk,
    "vdi": _vdi,
    "vhd": _vhd,
    "vhdx": _vhdx,
    "iso": _iso,
}
FORMATS = tuple(_INSPECTORS)


def _inspect(src: _Source, declared: str | None) -> Inspection | None:
    if declared is not None and declared not in _INSPECTORS:
        raise InspectionError(f"Unsupported disk format {declared}.")
    found = _identify(src)
    if declared == "vhd" and found == "raw":
        found = "vhd"  # a fixed VHD: raw sectors with a footer at the end, checked below
    _check_declared(found, declared)
    virtual_size = _INSPECTORS[found](src)
    if virtual_size is None:
        return None
    return Inspection(disk_format=declared if declared == "raw" else found, virtual_size=virtual_size)


# --- entry points -----------------------------------------------------------------------------


def sniff(header: bytes, *, declared: str | None = None, complete: bool = False) -> None:
    """Refuse an upload early from its first bytes (`complete`: they are the whole file)."""
    src = _Source(data=header, size=len(header) if complete else None)
    _inspect(src, declared)


def inspect(f: BinaryIO, *, size: int) -> Inspection:
    """Inspect a whole file (seekable) and say what it is."""
    if size == 0:
        raise InspectionError("The image is empty.")
    result = _inspect(_Source(f=f, size=size), None)
    assert result is not None
    return result


def inspect_as(f: BinaryIO, *, size: int, disk_format: str) -> Inspection:
    """Inspect a whole file and require the declared format to match the content."""
    if size == 0:
        raise InspectionError("The image is empty.")
    result = _inspect(_Source(f=f, size=size), disk_format)
    assert result is not None
    return result
