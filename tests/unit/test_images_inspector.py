"""The pure-Python format inspector: every supported format identified with its virtual size,
and the crafted files refused, both from the first bytes (sniff) and whole (inspect)."""

import io
import struct

import pytest

from apps.images import inspector
from apps.images.inspector import InspectionError
from tests.unit import test_images_crafted as crafted

MiB = crafted.MiB


def inspect_bytes(data: bytes, fmt: str | None = None):
    f = io.BytesIO(data)
    if fmt is None:
        return inspector.inspect(f, size=len(data))
    return inspector.inspect_as(f, size=len(data), disk_format=fmt)


@pytest.mark.parametrize(
    "qemu_format, options, expected",
    [
        ("qcow2", (), "qcow2"),
        ("qcow2", ("-o", "compat=0.10"), "qcow2"),
        ("vmdk", (), "vmdk"),
        ("vmdk", ("-o", "subformat=streamOptimized"), "vmdk"),
        ("vdi", (), "vdi"),
        ("vpc", (), "vhd"),
        ("vhdx", (), "vhdx"),
        ("raw", (), "raw"),
    ],
)
def test_formats_made_by_qemu_img(tmp_path, qemu_format, options, expected):
    data = crafted.qemu_img(tmp_path / "img", qemu_format, "64M", *options)
    found = inspect_bytes(data)
    assert found.disk_format == expected
    assert abs(found.virtual_size - 64 * MiB) < MiB  # vpc rounds to its CHS geometry
    assert inspect_bytes(data, expected).disk_format == expected
    inspector.sniff(data[: inspector.HEADER_BYTES], declared=expected)


def test_fixed_vhd_is_raw_sectors_with_a_footer(tmp_path):
    data = crafted.qemu_img(tmp_path / "fixed.vpc", "vpc", "8M", "-o", "subformat=fixed")
    assert inspect_bytes(data, "vhd").disk_format == "vhd"
    assert inspect_bytes(data).disk_format == "raw"  # without the declaration it is just sectors
    with pytest.raises(InspectionError, match="no VHD footer"):
        inspect_bytes(b"\0" * MiB, "vhd")


def _iso(blocks: int = 64) -> bytes:
    data = bytearray(blocks * 2048)
    pvd = 32768
    data[pvd] = 1
    data[pvd + 1 : pvd + 6] = b"CD001"
    data[pvd + 6] = 1
    struct.pack_into("<I", data, pvd + 80, blocks)
    struct.pack_into("<H", data, pvd + 128, 2048)
    return bytes(data)


def test_iso():
    data = _iso()
    assert inspect_bytes(data) == inspector.Inspection("iso", len(data))
    assert inspect_bytes(data, "raw").disk_format == "raw"  # an ISO may be declared raw
    with pytest.raises(InspectionError, match="raw, not the declared iso"):
        inspect_bytes(b"\0" * 128 * 1024, "iso")


def test_qcow2_with_a_backing_file(tmp_path):
    data = crafted.qcow2_with_backing(tmp_path)
    for check in (lambda: inspect_bytes(data, "qcow2"), lambda: inspector.sniff(data, declared="qcow2", complete=True)):
        with pytest.raises(InspectionError, match="backing file"):
            check()


def test_qcow2_with_an_external_data_file(tmp_path):
    with pytest.raises(InspectionError, match="external data file"):
        inspect_bytes(crafted.qcow2_with_data_file(tmp_path), "qcow2")


def test_qcow2_data_file_extension_without_the_feature_bit(tmp_path):
    data = bytearray(crafted.qcow2_with_data_file(tmp_path))
    struct.pack_into(">Q", data, 72, 0)  # clear the incompatible feature bit: the extension still says
    with pytest.raises(InspectionError, match="external data file"):
        inspect_bytes(bytes(data), "qcow2")


@pytest.mark.parametrize("length", [4, 40, 71, 100])
def test_truncated_qcow2_header(tmp_path, length):
    with pytest.raises(InspectionError, match="truncated"):
        inspect_bytes(crafted.truncated_qcow2(tmp_path, length), "qcow2")


def test_qcow2_cut_short_after_its_header(tmp_path):
    data = crafted.qemu_img(tmp_path / "q.qcow2", "qcow2", "64M")
    with pytest.raises(InspectionError, match="truncated"):
        inspect_bytes(data[:100 * 1024], "qcow2")
    inspector.sniff(data[:inspector.HEADER_BYTES], declared="qcow2")  # the start alone looks fine


def test_absurd_virtual_size(tmp_path):
    data = bytearray(crafted.qemu_img(tmp_path / "q.qcow2", "qcow2", "64M"))
    struct.pack_into(">Q", data, 24, 1 << 62)
    with pytest.raises(InspectionError, match="virtual size"):
        inspect_bytes(bytes(data), "qcow2")
    struct.pack_into(">Q", data, 24, 0)
    with pytest.raises(InspectionError, match="virtual size of 0"):
        inspect_bytes(bytes(data), "qcow2")


def test_qcow2_odd_headers(tmp_path):
    good = crafted.qemu_img(tmp_path / "q.qcow2", "qcow2", "64M")
    for offset, fmt, value, message in [
        (4, ">I", 1, "version 1"),
        (20, ">I", 30, "cluster bits"),
        (32, ">I", 1, "Encrypted"),
        (72, ">Q", 1 << 1, "corrupt"),
        (72, ">Q", 1 << 20, "unknown incompatible"),
    ]:
        data = bytearray(good)
        struct.pack_into(fmt, data, offset, value)
        with pytest.raises(InspectionError, match=message):
            inspect_bytes(bytes(data), "qcow2")


def test_vmdk_descriptor_files_are_refused():
    for declared in ("vmdk", None):
        with pytest.raises(InspectionError, match="descriptor files refer to other files"):
            inspect_bytes(crafted.vmdk_flat_descriptor(), declared)
    with pytest.raises(InspectionError, match="vmdk, not the declared raw"):
        inspect_bytes(crafted.vmdk_flat_descriptor(), "raw")
    # Without the comment line, as qemu probes it.
    text = b"\n# hello\nversion=1\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"/etc/shadow\" 0\n"
    with pytest.raises(InspectionError, match="vmdk"):
        inspect_bytes(text, "raw")


def test_sparse_vmdk_whose_descriptor_names_a_host_file(tmp_path):
    with pytest.raises(InspectionError, match="extent"):
        inspect_bytes(crafted.sparse_vmdk_with_flat_extent(tmp_path), "vmdk")


def test_vmdk_of_another_create_type(tmp_path):
    data = bytearray(crafted.qemu_img(tmp_path / "s.vmdk", "vmdk", "16M"))
    start = bytes(data).index(b'createType="monolithicSparse"')
    data[start : start + 29] = b'createType="twoGbMaxExtentSp"'
    with pytest.raises(InspectionError, match="not allowed"):
        inspect_bytes(bytes(data), "vmdk")


def test_differencing_vdi_is_refused(tmp_path):
    data = bytearray(crafted.qemu_img(tmp_path / "d.vdi", "vdi", "16M"))
    struct.pack_into("<I", data, 0x4C, 4)
    with pytest.raises(InspectionError, match="differencing"):
        inspect_bytes(bytes(data), "vdi")


def test_vhd_with_a_bad_checksum_or_a_parent(tmp_path):
    good = crafted.qemu_img(tmp_path / "d.vpc", "vpc", "16M")
    bad = bytearray(good)
    bad[100] ^= 0xFF
    with pytest.raises(InspectionError, match="checksum"):
        inspect_bytes(bytes(bad), "vhd")
    diff = bytearray(good[:512])
    struct.pack_into(">I", diff, 60, 4)
    struct.pack_into(">I", diff, 64, 0)
    checksum = ~(sum(diff[:64]) + sum(diff[68:512])) & 0xFFFFFFFF
    struct.pack_into(">I", diff, 64, checksum)
    with pytest.raises(InspectionError, match="Differencing VHD"):
        inspect_bytes(bytes(diff) + good[512:], "vhd")


def test_vhdx_cut_short_is_refused(tmp_path):
    data = crafted.qemu_img(tmp_path / "d.vhdx", "vhdx", "16M")
    with pytest.raises(InspectionError, match="truncated"):
        inspect_bytes(data[: 200 * 1024], "vhdx")


def test_ambiguous_and_unsupported_content(tmp_path):
    qcow2 = crafted.qemu_img(tmp_path / "q.qcow2", "qcow2", "16M")
    both = bytearray(_iso())
    both[: len(qcow2[:512])] = qcow2[:512]
    with pytest.raises(InspectionError, match="several formats"):
        inspect_bytes(bytes(both))
    with pytest.raises(InspectionError, match="QED"):
        inspect_bytes(b"QED\x00" + b"\0" * 4096, "raw")
    with pytest.raises(InspectionError, match="LUKS"):
        inspect_bytes(b"LUKS\xba\xbe" + b"\0" * 4096, "raw")
    with pytest.raises(InspectionError, match="empty"):
        inspect_bytes(b"", "raw")
    with pytest.raises(InspectionError, match="Unsupported disk format"):
        inspect_bytes(b"\0" * 512, "floppy")


def test_sniff_needs_only_the_start():
    inspector.sniff(b"\0" * 100, declared="raw")  # not enough to decide anything: fine
    with pytest.raises(InspectionError, match="qcow2, not the declared raw"):
        inspector.sniff(b"QFI\xfb" + b"\0" * 200, declared="raw")
