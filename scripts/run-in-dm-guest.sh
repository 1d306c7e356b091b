#!/usr/bin/env bash
# Run one command inside a throw-away QEMU (TCG) guest whose kernel has device-mapper, loop and
# thin pools, with the host's root file system as the guest's root, read-only. For tests that
# need kernel features this host lacks (tests/agents/test_volumes_lvm_guest.py runs the LVM
# backend's tests this way; see docs/volumes.md, "The LVM backend").
#
#   scripts/run-in-dm-guest.sh [--timeout SECONDS] [--memory MIB] [--cwd DIR] [--env NAME=VALUE]...
#                              -- COMMAND [ARG]...
#
# Prints COMMAND's output (stdout and stderr together) and exits with its exit status; 124 when
# the hard timeout (default 600 s) stopped the guest, 125 when the guest did not run COMMAND to
# its end (the tail of the guest's console is printed on stderr).
#
# The guest: Debian's cloud kernel (the test guest's kernel package, linux-image-*-cloud-amd64)
# booted directly (-kernel/-initrd) with an initramfs of busybox-static and the kernel's modules
# for virtio-pci, virtiofs, loop and the device-mapper thin-pool target. Its /init mounts the
# host's / read-only over virtiofs (/usr/lib/qemu/virtiofsd, sandbox=chroot), puts proc, sysfs,
# devtmpfs and tmpfs (/tmp, /run, /var/tmp, /dev/shm) over it, writes an lvm.conf without udev
# to /run/lvm-guest (LVM_SYSTEM_DIR) and chroots into it to run COMMAND, whose output goes to a
# second serial port. Nothing the command writes survives the guest.
#
# Built once and cached in $CLOUDMGR_DM_GUEST_DIR (default: var/build/dm-guest, beside the test
# guest image): vmlinuz and initrd.gz, rebuilt only when this script, the kernel .deb or busybox
# change. Nothing is downloaded: the kernel .deb is taken from the test guest's build cache
# (scripts/build-testvm.sh, run by `make test`, fetches it through apt) or from
# /var/cache/apt/archives, the highest version found. Needs root (mknod, virtiofsd) and the
# packages scripts/host-setup.sh installs (qemu-system-x86, qemu-system-common, busybox-static, kmod, cpio).
set -euo pipefail

die() { echo "run-in-dm-guest: ERROR: $*" >&2; exit 125; }
usage() {
    echo "usage: $0 [--timeout SECONDS] [--memory MIB] [--cwd DIR] [--env NAME=VALUE]... -- COMMAND [ARG]..." >&2
    exit 2
}

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
REPO="$(dirname "$(dirname "$SELF")")"
MODULES_LIB="$(dirname "$SELF")/kernel-modules.sh"
# shellcheck source=kernel-modules.sh
. "$MODULES_LIB"
TESTVM_IMAGE="${CLOUDMGR_TESTVM_IMAGE:-$REPO/var/build/testvm.qcow2}"
CACHE="${CLOUDMGR_DM_GUEST_DIR:-$(dirname "$TESTVM_IMAGE")/dm-guest}"
VIRTIOFSD=/usr/lib/qemu/virtiofsd
BUSYBOX=/bin/busybox

TIMEOUT=600
MEMORY_MIB=2048
WORKDIR="$PWD"
EXTRA_ENV=()
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) [ $# -ge 2 ] || usage; TIMEOUT="$2"; shift 2 ;;
        --memory) [ $# -ge 2 ] || usage; MEMORY_MIB="$2"; shift 2 ;;
        --cwd) [ $# -ge 2 ] || usage; WORKDIR="$2"; shift 2 ;;
        --env) [ $# -ge 2 ] || usage; [[ "$2" == [A-Za-z_]*=* ]] || usage; EXTRA_ENV+=("$2"); shift 2 ;;
        --) shift; break ;;
        *) usage ;;
    esac
done
[ $# -ge 1 ] || usage
[[ "$TIMEOUT" =~ ^[0-9]+$ && "$MEMORY_MIB" =~ ^[0-9]+$ ]] || usage
[ "$(id -u)" -eq 0 ] || die "must run as root (mknod for the initramfs, virtiofsd)"
for tool in qemu-system-x86_64 "$VIRTIOFSD" "$BUSYBOX" dpkg-deb depmod modprobe cpio gzip flock timeout; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/host-setup.sh first"
done
WORKDIR="$(cd "$WORKDIR" && pwd)"
case "$WORKDIR$CACHE" in *[[:space:]:]*) die "the work and cache directories may not contain spaces or colons (the guest's kernel command line carries them)" ;; esac

# ---------------------------------------------------------------- kernel package
# Concrete kernel packages only (linux-image-6.1.0-56-cloud-amd64_...), not the metapackage.
kernel_debs() {
    local dir
    for dir in "$(dirname "$TESTVM_IMAGE")/testvm-build" /var/cache/apt/archives; do
        compgen -G "$dir/linux-image-[0-9]*-cloud-amd64_*_amd64.deb" || true
    done
}
KDEB="$(kernel_debs | awk -F/ '{print $NF "\t" $0}' | sort -V -k1,1 | tail -n1 | cut -f2)"
[ -n "$KDEB" ] || die "no linux-image-*-cloud-amd64 .deb in $(dirname "$TESTVM_IMAGE")/testvm-build or" \
    "/var/cache/apt/archives: run scripts/build-testvm.sh (make image), which fetches it through apt"

# ---------------------------------------------------------------- the guest's /init and lvm.conf
# Kept here so that changing them changes this script, which rebuilds the initramfs.
read -r -d '' GUEST_INIT <<'EOF' || true
#!/bin/sh
# PID 1 of the device-mapper guest (scripts/run-in-dm-guest.sh). The kernel passes the
# command line's cloudmgr_job=PATH (a script on the host's root) in the environment.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
    echo "dm-guest: $*" >/dev/console
    exec 3>&-
    poweroff -f
}
while read -r module; do
    insmod "/lib/modules/$module" || fail "insmod $module failed"
done </lib/modules/load-order
ip link set lo up
mount -t virtiofs -o ro hostroot /newroot || fail "cannot mount the host's root (virtiofs tag hostroot)"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
# The host's root as it is, before the tmpfs mounts hide parts of it: the job's directories
# (cloudmgr_keep, colon-separated) may lie under /tmp, and are bound back from here.
mkdir -p /hostview
mount -o bind /newroot /hostview || fail "cannot bind the host's root"
for dir in /dev/shm /tmp /run /var/tmp; do
    mount -t tmpfs -o mode=1777 tmpfs "/newroot$dir" || fail "cannot mount tmpfs on $dir"
done
for keep in $(echo "$cloudmgr_keep" | tr ':' ' '); do
    for dir in /dev/shm /tmp /run /var/tmp; do
        case "$keep/" in
            "$dir"/*) mkdir -p "/newroot$keep" && mount -o bind "/hostview$keep" "/newroot$keep" \
                          || fail "cannot bind $keep back over the tmpfs on $dir" ;;
        esac
    done
done
mkdir -p /newroot/run/lvm-guest /newroot/run/lock
cp /etc/lvm.conf /newroot/run/lvm-guest/lvm.conf
# The command's output goes to the second serial port, raw (no \n to \r\n); closing it waits
# until the port has sent everything, so the status line is complete before the power-off.
exec 3>/dev/ttyS1
stty -F /dev/ttyS1 raw -echo
chroot /newroot /bin/bash "$cloudmgr_job" </dev/null >&3 2>&3
printf '\n@@dm-guest-exit-status %d\n' $? >&3
exec 3>&-
sync
poweroff -f
EOF

read -r -d '' GUEST_LVM_CONF <<'EOF' || true
# The device-mapper guest has no udev and a read-only /etc: LVM makes its own device nodes,
# keeps no metadata backups and monitors nothing.
devices {
    obtain_device_list_from_udev = 0
    external_device_info_source = "none"
    use_devicesfile = 0
}
activation {
    udev_sync = 0
    udev_rules = 0
    verify_udev_operations = 0
    monitoring = 0
}
global {
    use_lvmpolld = 0
    event_activation = 0
}
backup {
    backup = 0
    archive = 0
}
EOF

# ---------------------------------------------------------------- build (cached)
# virtio_pci + virtiofs: the root; loop + dm_thin_pool (dm_mod, dm_persistent_data, dm_bufio,
# dm_bio_prison): LVM thin pools on a loop device; virtio_rng: entropy for getrandom().
WANTED_MODULES=(virtio_pci virtiofs virtio_rng loop dm_thin_pool)

inputs_key() {
    { sha256sum "$SELF" "$MODULES_LIB"; stat -c '%n %s %Y' "$KDEB" "$BUSYBOX"; } | sha256sum | cut -d' ' -f1
}

built() {
    [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/initrd.gz" ] && [ "$(cat "$CACHE/inputs" 2>/dev/null)" = "$KEY" ]
}

build() {
    local work root
    BUILD_WORK="$(mktemp -d "$CACHE/work.XXXXXX")"
    work="$BUILD_WORK"
    echo "run-in-dm-guest: building the guest from $(basename "$KDEB")" >&2
    unpack_kernel "$KDEB" "$work/kernel"

    root="$work/initramfs"
    mkdir -p "$root"/{bin,sbin,etc,dev,proc,sys,newroot,lib/modules}
    : >"$root/lib/modules/load-order"
    copy_modules "$MODULES_ROOT" "$KERNEL_VERSION" "$root/lib/modules" "$root/lib/modules/load-order" "${WANTED_MODULES[@]}"

    install -m 755 "$BUSYBOX" "$root/bin/busybox"
    for applet in sh mount insmod ip mkdir cp stty chroot sync poweroff cat; do
        ln -s busybox "$root/bin/$applet"
    done
    printf '%s\n' "$GUEST_INIT" >"$root/init"
    chmod 755 "$root/init"
    printf '%s\n' "$GUEST_LVM_CONF" >"$root/etc/lvm.conf"
    mknod -m 600 "$root/dev/console" c 5 1
    (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) \
        | gzip -1n >"$work/initrd.gz"

    cp "$KERNEL_IMAGE" "$work/vmlinuz"
    mv -f "$work/vmlinuz" "$CACHE/vmlinuz"
    mv -f "$work/initrd.gz" "$CACHE/initrd.gz"
    echo "$KEY" >"$CACHE/inputs"
    echo "run-in-dm-guest: guest kernel $KERNEL_VERSION, modules: $(tr '\n' ' ' <"$root/lib/modules/load-order")" >&2
    rm -rf "$work"
}

BUILD_WORK=
RUN=
VIRTIOFSD_PID=
QEMU_PID=
# Runs on every exit, signals included: a killed run leaves no QEMU, virtiofsd or files behind.
cleanup() {
    local pid
    for pid in $QEMU_PID $VIRTIOFSD_PID; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$BUILD_WORK" "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

mkdir -p "$CACHE/runs"
KEY="$(inputs_key)"
# Readers share the lock, a build takes it alone: a build never swaps files under a booting guest.
exec 8>"$CACHE/.lock"
if ! { flock -s 8 && built; }; then
    flock -x 8
    built || build
    flock -s 8
fi

# ---------------------------------------------------------------- run
RUN="$(mktemp -d "$CACHE/runs/run.XXXXXX")"

# The job: a bash script on the host's root, which the guest sees at the same path.
{
    echo "cd $(printf '%q' "$WORKDIR") || exit 125"
    echo "unset cloudmgr_job cloudmgr_keep"
    echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb"
    # Read-only root: Python cannot write bytecode, so it should not try.
    echo "export LVM_SYSTEM_DIR=/run/lvm-guest PYTHONDONTWRITEBYTECODE=1"
    for assignment in "${EXTRA_ENV[@]}"; do echo "export $(printf '%q' "$assignment")"; done
    printf 'exec'; printf ' %q' "$@"; echo
} >"$RUN/job"

# cache=always: the guest keeps what it looked up (the tree does not change under it), which
# is what makes Python's imports bearable under TCG.
"$VIRTIOFSD" --socket-path="$RUN/fs.sock" -o source=/ -o sandbox=chroot -o cache=always \
    -o announce_submounts -o log_level=err >"$RUN/virtiofsd.log" 2>&1 &
VIRTIOFSD_PID=$!
for _ in $(seq 100); do
    [ -S "$RUN/fs.sock" ] && break
    kill -0 "$VIRTIOFSD_PID" 2>/dev/null || die "virtiofsd exited: $(cat "$RUN/virtiofsd.log")"
    sleep 0.1
done
[ -S "$RUN/fs.sock" ] || die "virtiofsd made no socket in 10 s"

# vhost-user needs the guest's RAM shared with virtiofsd (a memfd backend as its NUMA node).
# In the background, so that a signal to this script is handled at once (cleanup stops QEMU;
# timeout passes the signal on).
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m "$MEMORY_MIB" \
    -object "memory-backend-memfd,id=mem,size=${MEMORY_MIB}M,share=on" -numa node,memdev=mem \
    -chardev "socket,id=hostroot,path=$RUN/fs.sock" \
    -device vhost-user-fs-pci,chardev=hostroot,tag=hostroot \
    -device virtio-rng-pci -nic none \
    -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1 cloudmgr_job=$RUN/job cloudmgr_keep=$WORKDIR:$RUN" \
    -nographic -monitor none -serial "file:$RUN/console.log" -serial "file:$RUN/output.log" \
    -no-reboot </dev/null >"$RUN/qemu.log" 2>&1 &
QEMU_PID=$!
qemu_status=0
wait "$QEMU_PID" || qemu_status=$?
QEMU_PID=
touch "$RUN/output.log"

# The guest ends the output with "\n@@dm-guest-exit-status N\n": print what came before it.
last_line="$(tail -n 1 "$RUN/output.log")"
if [[ "$last_line" =~ ^@@dm-guest-exit-status\ ([0-9]+)$ ]]; then
    head -c -"$(( ${#last_line} + 2 ))" "$RUN/output.log"
    exit "${BASH_REMATCH[1]}"
fi
cat "$RUN/output.log"
{
    if [ "$qemu_status" -eq 124 ]; then
        echo "run-in-dm-guest: the guest did not finish within $TIMEOUT s"
    else
        echo "run-in-dm-guest: the guest stopped (QEMU exit status $qemu_status) before the command ended"
    fi
    echo "---- QEMU"; tail -n 20 "$RUN/qemu.log"
    echo "---- virtiofsd"; tail -n 20 "$RUN/virtiofsd.log"
    echo "---- guest console"; tail -n 40 "$RUN/console.log"
} >&2
if [ "$qemu_status" -eq 124 ]; then exit 124; fi
exit 125
