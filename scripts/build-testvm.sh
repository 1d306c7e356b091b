#!/usr/bin/env bash
# Build the cloudmgr test guest: a tiny bootable qcow2 made only from Debian
# packages (see docs/testvm.md).
#
#   scripts/build-testvm.sh OUT.qcow2
#
# Disk layout: MBR (syslinux mbr.bin) + one FAT16 partition holding syslinux,
# the Debian cloud kernel and an initramfs (busybox-static + virtio modules).
# The guest runs entirely from the initramfs; the disk is only read at boot.
#
# Downloaded .debs are cached in $(dirname OUT)/testvm-build/. If OUT is newer
# than this script and scripts/testvm/*, nothing is done. OUT is replaced
# atomically (built under a temporary name, then renamed).
#
# Needs root (apt-get download as root, mknod) and: apt, dpkg-deb, kmod
# (depmod/modprobe), cpio, gzip, dosfstools, mtools, syslinux, syslinux-common,
# fdisk (sfdisk), qemu-utils. scripts/host-setup.sh installs them all.
set -euo pipefail

die() { echo "build-testvm: ERROR: $*" >&2; exit 1; }
say() { echo "build-testvm: $*"; }

[ $# -eq 1 ] || { echo "usage: $0 OUT.qcow2" >&2; exit 2; }

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
GUEST_DIR="$(dirname "$SELF")/testvm"
MODULES_LIB="$(dirname "$SELF")/kernel-modules.sh"
# shellcheck source=kernel-modules.sh
. "$MODULES_LIB"
OUT="$1"
OUT_DIR="$(dirname "$OUT")"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
OUT="$OUT_DIR/$(basename "$OUT")"
CACHE="$OUT_DIR/testvm-build"

# ---------------------------------------------------------------- up to date?
up_to_date() {
    [ -f "$OUT" ] && [ -z "$(find "$SELF" "$MODULES_LIB" "$GUEST_DIR" -newer "$OUT" -print -quit)" ]
}
if up_to_date; then
    say "$OUT is up to date"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get download, mknod)"
for tool in flock apt-get apt-cache dpkg-deb depmod modprobe cpio gzip mkfs.fat mcopy syslinux sfdisk qemu-img; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/host-setup.sh first"
done
MBR=/usr/lib/syslinux/mbr/mbr.bin
[ -r "$MBR" ] || die "$MBR not found (package syslinux-common)"

START=$SECONDS
mkdir -p "$CACHE"
# One build at a time per cache dir (e.g. parallel test runs); whoever waited
# finds OUT fresh and stops.
exec 9>"$CACHE/.lock"
flock 9
if up_to_date; then
    say "$OUT is up to date"
    exit 0
fi
WORK="$(mktemp -d "$CACHE/work.XXXXXX")"
TMP_OUT="$OUT.tmp.$$"
trap 'rm -rf "$WORK" "$TMP_OUT"' EXIT
trap 'exit 130' INT TERM HUP    # make the EXIT trap clean up on signals too

# ---------------------------------------------------------------- packages
APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" -eq 0 ] || return 1
    say "$1: apt-get update"
    apt-get update -qq || die "apt-get update failed"
    APT_UPDATED=1
}

# Name of the concrete kernel package behind the linux-image-cloud-amd64
# metapackage, e.g. linux-image-6.1.0-56-cloud-amd64.
kernel_pkg() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[^ ]*-cloud-amd64\)$/\1/p' | head -n1
}

# Set DEB to the cached .deb of PKG's candidate version, downloading it if
# needed. Runs apt-get update (once) when the lists lack PKG or are so stale
# that the mirror no longer has that version.
fetch_deb() {
    local pkg="$1" ver
    while :; do
        ver="$(apt-cache policy "$pkg" 2>/dev/null | sed -n 's/^ *Candidate: //p')"
        if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
            apt_update "no candidate for $pkg" && continue
            die "no candidate version for $pkg in the apt lists"
        fi
        # apt-get download names files PKG_VERSION_ARCH.deb, ':' written as %3a.
        DEB="$CACHE/${pkg}_${ver//:/%3a}_amd64.deb"
        [ -s "$DEB" ] && return 0
        say "downloading $pkg $ver"
        # As root, apt drops to the _apt user for downloads unless told not
        # to, and _apt cannot write into our cache dir.
        if (cd "$CACHE" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver" >/dev/null) \
            && [ -s "$DEB" ]; then
            return 0
        fi
        apt_update "download of $pkg=$ver failed" && continue
        die "apt-get download $pkg=$ver failed"
    done
}

KPKG="$(kernel_pkg)"
if [ -z "$KPKG" ]; then
    apt_update "linux-image-cloud-amd64 unknown" || true
    KPKG="$(kernel_pkg)"
    [ -n "$KPKG" ] || die "cannot resolve linux-image-cloud-amd64 to a kernel package"
fi
fetch_deb "$KPKG"; KDEB="$DEB"
fetch_deb busybox-static; BDEB="$DEB"
fetch_deb qemu-guest-agent; QGADEB="$DEB"

# ---------------------------------------------------------------- kernel + modules
say "unpacking $(basename "$KDEB")"
unpack_kernel "$KDEB" "$WORK/kernel"

# virtio_pci: PCI transport for every virtio device; virtio_blk/net: disks, NIC;
# virtio_console, virtio_rng, virtio_balloon: cheap and present in libvirt
# domains; evdev + button: the ACPI power button as an input event for acpid.
# (ext4 is built into this kernel, so volume tests need no extra module.)
WANTED_MODULES=(virtio_pci virtio_blk virtio_net virtio_console virtio_rng virtio_balloon evdev button)
# A config drive (an ISO 9660 CD-ROM on the IDE bus): loaded in the background
# by /etc/init.d/configdrive, so they cost the boot nothing.
CDROM_MODULES=(ata_piix sr_mod isofs)

ROOT="$WORK/initramfs"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,etc/acpi/PWRF,lib/modules,dev,proc,sys,run,tmp,root,mnt,var/log}
# busybox daemons (acpid) write /var/run/*.pid and /var/log/*.log; without
# those dirs a daemonized acpid silently exits.
ln -s ../run "$ROOT/var/run"

# Copy MODULES... and their dependencies (uncompressed, for busybox insmod) and
# write their load order to LIST; modules already copied for an earlier list
# are skipped.
collect_modules() {
    local list="$1"; shift
    : >"$list"
    copy_modules "$MODULES_ROOT" "$KERNEL_VERSION" "$ROOT/lib/modules" "$list" "$@"
    say "modules ($(basename "$list")): $(tr '\n' ' ' <"$list")"
}
collect_modules "$ROOT/lib/modules/load-order" "${WANTED_MODULES[@]}"
collect_modules "$ROOT/lib/modules/load-order.cdrom" "${CDROM_MODULES[@]}"

# ---------------------------------------------------------------- initramfs
dpkg-deb --fsys-tarfile "$BDEB" | tar -x -C "$WORK" ./bin/busybox
install -m 755 "$WORK/bin/busybox" "$ROOT/bin/busybox"
# One symlink per applet (bin/sh, sbin/init, sbin/udhcpc, ...).
"$ROOT/bin/busybox" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$ROOT/$(dirname "$applet")"
    ln -sf "/bin/busybox" "$ROOT/$applet"
done
# qemu-ga, the QEMU guest agent (started only when the domain has its virtio
# channel: /etc/init.d/guest-agent): the package's binary, and the shared
# libraries it links, copied from this host (Debian 12 too, where QEMU and
# libvirt already installed them).
dpkg-deb --fsys-tarfile "$QGADEB" | tar -x -C "$WORK" ./usr/sbin/qemu-ga
install -m 755 "$WORK/usr/sbin/qemu-ga" "$ROOT/usr/sbin/qemu-ga"
libs="$(ldd "$ROOT/usr/sbin/qemu-ga")" || die "ldd qemu-ga failed"
if grep -q 'not found' <<<"$libs"; then
    die "qemu-ga needs libraries this host lacks: $(grep 'not found' <<<"$libs" | tr -s '\n\t' ' ')"
fi
for lib in $(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$libs"); do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done
# The kernel runs /init from an initramfs; busybox picks its init applet from
# argv[0], so PID 1 is busybox init (with /etc/inittab), not a shell script.
ln -sf /bin/busybox "$ROOT/init"
mknod -m 600 "$ROOT/dev/console" c 5 1
mknod -m 666 "$ROOT/dev/null" c 1 3

install -m 644 "$GUEST_DIR/inittab" "$ROOT/etc/inittab"
install -m 755 "$GUEST_DIR/rcS" "$ROOT/etc/init.d/rcS"
install -m 755 "$GUEST_DIR/rcK" "$ROOT/etc/init.d/rcK"
install -m 755 "$GUEST_DIR/udhcpc.script" "$ROOT/etc/udhcpc.script"
install -m 755 "$GUEST_DIR/metadata" "$ROOT/etc/init.d/metadata"
install -m 755 "$GUEST_DIR/configdrive" "$ROOT/etc/init.d/configdrive"
install -m 755 "$GUEST_DIR/guest-agent" "$ROOT/etc/init.d/guest-agent"
install -m 755 "$GUEST_DIR/chpasswd" "$ROOT/usr/sbin/chpasswd"
install -m 755 "$GUEST_DIR/acpi-power-button" "$ROOT/etc/acpi/PWRF/00000080"
install -m 644 "$GUEST_DIR/profile" "$ROOT/etc/profile"
echo testvm >"$ROOT/etc/hostname"
# root has no password (the console shell needs none); qemu-ga's
# guest-set-user-password runs busybox chpasswd, which writes /etc/shadow.
echo 'root:x:0:0:root:/root:/bin/sh' >"$ROOT/etc/passwd"
echo 'root::19000:0:99999:7:::' >"$ROOT/etc/shadow"
chmod 600 "$ROOT/etc/shadow"
echo 'root:x:0:' >"$ROOT/etc/group"

(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) \
    | gzip -9n >"$WORK/initrd.gz"

# ---------------------------------------------------------------- disk image
cp "$KERNEL_IMAGE" "$WORK/vmlinuz"
cat >"$WORK/syslinux.cfg" <<'EOF'
DEFAULT testvm
PROMPT 0
TIMEOUT 0
LABEL testvm
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0 panic=10
EOF

# Partition starts at 1 MiB; disk = 1 MiB + payload + 8 MiB spare, rounded up
# to 16 MiB (unwritten space costs nothing in the qcow2).
payload_kib=$(( $(du -k -c "$WORK/vmlinuz" "$WORK/initrd.gz" | tail -n1 | cut -f1) ))
disk_mib=$(( ((1 + payload_kib / 1024 + 8) + 15) / 16 * 16 ))
part_sectors=$(( (disk_mib - 1) * 2048 ))
RAW="$WORK/disk.raw"
PART="$WORK/part.raw"
truncate -s "${disk_mib}M" "$RAW"
printf 'label: dos\nstart=2048, size=%d, type=e, bootable\n' "$part_sectors" \
    | sfdisk -q "$RAW" >/dev/null
dd if="$MBR" of="$RAW" bs=440 count=1 conv=notrunc status=none

truncate -s $((part_sectors * 512)) "$PART"
# -h 2048: "hidden sectors" = partition start; syslinux's boot sector needs it
# to find ldlinux.sys on the whole disk.
mkfs.fat -F 16 -h 2048 -n TESTVM "$PART" >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i "$PART" "$WORK/vmlinuz" "$WORK/initrd.gz" "$WORK/syslinux.cfg" ::/
syslinux --install "$PART"           # mtools-based: no loop mount needed
dd if="$PART" of="$RAW" bs=1M seek=1 conv=notrunc,sparse status=none

qemu-img convert -f raw -O qcow2 "$RAW" "$TMP_OUT"
chmod 644 "$TMP_OUT"
mv -f "$TMP_OUT" "$OUT"
say "built $OUT ($(du -k "$OUT" | cut -f1) KiB on disk, virtual ${disk_mib} MiB, kernel $KERNEL_VERSION) in $((SECONDS - START)) s"
