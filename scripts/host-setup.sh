#!/usr/bin/env bash
# Prepare a Debian 12 host (as root) to run cloudmgr and its tests:
#   - install the Debian packages the cloud needs (only when some are missing),
#   - make /dev/kvm group kvm mode 660 (stops libvirt re-probing QEMU on every start),
#   - start virtlogd, libvirtd and redis-server if they are not running
#     (the machine has no systemd as PID 1, so daemons are started directly),
#   - check that QEMU (user libvirt-qemu) can reach disk files under the data dir,
#   - with --postgres: install/start PostgreSQL and create role + database "cloudmgr".
# Idempotent: a second run does no work and takes about a second.
# See docs/host-setup.md.
set -euo pipefail

usage() {
    echo "usage: $0 [--postgres]" >&2
    exit 2
}

WANT_POSTGRES=0
for arg in "$@"; do
    case "$arg" in
        --postgres) WANT_POSTGRES=1 ;;
        -h|--help) usage ;;
        *) echo "host-setup: unknown argument: $arg" >&2; usage ;;
    esac
done

say()  { echo "host-setup: $*"; }
die()  { echo "host-setup: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Same default as cloudmgr/settings.py (DATA_DIR).
DATA_DIR="${CLOUDMGR_DATA_DIR:-$REPO/var}"

# ---------------------------------------------------------------- packages
PACKAGES=(
    python3-venv python3-dev gcc pkg-config libvirt-dev
    libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
    redis-server dnsmasq-base nftables iproute2 iputils-ping
    python3-nftables  # nftables' own binding of libnftables (not on PyPI; linked into the venv)
    iputils-arping    # gratuitous ARP for a router's new external addresses
    xorriso           # config drives (ISO 9660)
    e2fsprogs util-linux  # mkfs.ext4 and mkswap: the flavors' ephemeral and swap disks
    lvm2 thin-provisioning-tools  # the LVM thin-pool volume backend
    qemu-system-common  # /usr/lib/qemu/virtiofsd: scripts/run-in-dm-guest.sh shares / with its guest
    busybox-static syslinux syslinux-common mtools dosfstools fdisk cpio kmod zstd
    ca-certificates
    tini              # reaps the guests' QEMU processes for libvirtd (below)
    chromium          # headless browser for the UI tests
)
if [ "$WANT_POSTGRES" -eq 1 ]; then PACKAGES+=(postgresql); fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        || die "apt-get install failed: ${missing[*]}"
else
    say "packages: all ${#PACKAGES[@]} present"
fi

# ---------------------------------------------------------------- /dev/kvm
# We run guests as domain type 'qemu' (TCG), yet libvirt still looks at /dev/kvm:
# when it is not accessible to the kvm group it invalidates its QEMU capability
# cache and re-probes QEMU (~48 s) on every domain start. kvm:660 fixes that.
if [ -e /dev/kvm ]; then
    if [ "$(stat -c '%G %a' /dev/kvm)" != "kvm 660" ]; then
        chgrp kvm /dev/kvm && chmod 660 /dev/kvm
        say "/dev/kvm set to group kvm mode 660"
    fi
fi

# ---------------------------------------------------------------- daemons
# True when a process with this exact command name (comm) runs. Reads /proc so
# it needs neither procps nor pidof (absent from minimal Debian images).
is_running() {
    local comm
    for comm in /proc/[0-9]*/comm; do
        [ "$(cat "$comm" 2>/dev/null)" = "$1" ] && return 0
    done
    return 1
}

# libvirtd hands QEMU's stdout/stderr (and serial <log file=...>) to virtlogd;
# without virtlogd every domain start fails.
if ! is_running virtlogd; then
    say "starting virtlogd"
    virtlogd -d || die "virtlogd failed to start"
fi
# libvirt daemonizes each QEMU, so an exited guest's process is reaped by PID 1 or the
# nearest subreaper, and destroying a domain waits until it is reaped. When PID 1 is not an
# init that reaps at once (here each destroy took 1.2-1.6 s for a QEMU gone in 6 ms), the
# guests' reaper is tini (-s: subreaper), which runs libvirtd in the foreground.
if ! is_running libvirtd; then
    say "starting libvirtd"
    install -d /var/log/libvirt
    setsid tini -s -- libvirtd >>/var/log/libvirt/libvirtd.log 2>&1 </dev/null &
    libvirtd_pid=$!
fi
deadline=$((SECONDS + 60))
until timeout 10 virsh -c qemu:///system version >/dev/null 2>&1; do
    if [ -n "${libvirtd_pid:-}" ] && ! kill -0 "$libvirtd_pid" 2>/dev/null; then
        die "libvirtd exited at start (see /var/log/libvirt/libvirtd.log)"
    fi
    [ "$SECONDS" -lt "$deadline" ] \
        || die "libvirtd does not answer on qemu:///system after 60 s (try: virsh -c qemu:///system version)"
    sleep 0.5
done
say "libvirt: $(virsh -c qemu:///system version 2>/dev/null | sed -n 's/^Running hypervisor: //p')"

if ! redis-cli ping >/dev/null 2>&1; then
    say "starting redis-server"
    if [ -r /etc/redis/redis.conf ] && id redis >/dev/null 2>&1; then
        # Debian's config (127.0.0.1:6379, daemonize, /var/lib/redis) run as the
        # redis user like its service would; systemd normally makes /run/redis.
        install -d -o redis -g redis -m 2775 /run/redis
        runuser -u redis -- redis-server /etc/redis/redis.conf --daemonize yes \
            || die "redis-server failed to start (see /var/log/redis/redis-server.log)"
    else
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 \
            || die "redis-server failed to start"
    fi
    deadline=$((SECONDS + 20))
    until redis-cli ping >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "redis-server does not answer redis-cli ping after 20 s"
        sleep 0.2
    done
fi
say "redis: $(redis-cli ping)"

# ---------------------------------------------------------------- data dir access
# QEMU runs as libvirt-qemu. libvirt's dynamic_ownership chowns each disk file
# (and its backing files) to that user at domain start, but QEMU must still be
# able to *traverse* every parent directory, i.e. needs search (x) permission on
# each. Default Debian paths (/work, /tmp, /srv, /var/lib) have o+x; a tree under
# /root (mode 700) or a home made with umask 077 does not, and domain start then
# fails with "Permission denied" / "Could not open '...'". We grant only search
# permission, only to libvirt-qemu (ACL) where possible, on only the dirs lacking it.
mkdir -p "$DATA_DIR"
DATA_DIR="$(cd "$DATA_DIR" && pwd -P)"
if id libvirt-qemu >/dev/null 2>&1; then
    # Ancestors from / down to the data dir, so each check sees its parents fixed.
    dirs=()
    dir="$DATA_DIR"
    while [ "$dir" != / ]; do dirs=("$dir" "${dirs[@]}"); dir="$(dirname "$dir")"; done
    for dir in / "${dirs[@]}"; do
        runuser -u libvirt-qemu -- test -x "$dir" && continue
        if command -v setfacl >/dev/null 2>&1 && setfacl -m u:libvirt-qemu:x "$dir" 2>/dev/null; then
            say "granted libvirt-qemu search permission on $dir (ACL u:libvirt-qemu:x)"
        else
            chmod o+x "$dir"
            say "granted search permission on $dir (chmod o+x) so QEMU can reach $DATA_DIR"
        fi
    done
    runuser -u libvirt-qemu -- test -x "$DATA_DIR" \
        || die "user libvirt-qemu still cannot reach $DATA_DIR"
    say "data dir: $DATA_DIR reachable by libvirt-qemu"
fi

# ---------------------------------------------------------------- postgres
if [ "$WANT_POSTGRES" -eq 1 ]; then
    # First cluster listed, e.g. "15 main 5432 online postgres ...". Found
    # dynamically so a later Debian's PostgreSQL version works as well.
    read -r pg_ver pg_name pg_port pg_status _ < <(pg_lsclusters -h | head -n1) || true
    if [ -z "${pg_ver:-}" ]; then
        pg_ver="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)"
        say "creating PostgreSQL cluster $pg_ver/main"
        pg_createcluster "$pg_ver" main >/dev/null
        read -r pg_ver pg_name pg_port pg_status _ < <(pg_lsclusters -h | head -n1)
    fi
    if [ "${pg_status%%,*}" != online ]; then
        say "starting PostgreSQL $pg_ver/$pg_name"
        pg_ctlcluster "$pg_ver" "$pg_name" start \
            || die "PostgreSQL $pg_ver/$pg_name failed to start (see /var/log/postgresql/)"
    fi
    psql_pg() { (cd / && runuser -u postgres -- psql -p "$pg_port" -X -q -v ON_ERROR_STOP=1 "$@"); }
    if [ "$(psql_pg -tAc "SELECT 1 FROM pg_roles WHERE rolname='cloudmgr'")" != 1 ]; then
        say "creating PostgreSQL role cloudmgr"
        psql_pg -c "CREATE ROLE cloudmgr LOGIN CREATEDB PASSWORD 'cloudmgr'"
    fi
    if [ "$(psql_pg -tAc "SELECT 1 FROM pg_database WHERE datname='cloudmgr'")" != 1 ]; then
        say "creating PostgreSQL database cloudmgr"
        psql_pg -c "CREATE DATABASE cloudmgr OWNER cloudmgr"
    fi
    url="postgres://cloudmgr:cloudmgr@127.0.0.1:$pg_port/cloudmgr"
    PGPASSWORD=cloudmgr psql -X -q -tA "$url" -c 'SELECT 1' >/dev/null 2>&1 \
        || die "cannot log in as cloudmgr over TCP: $url"
    say "postgres: $pg_ver/$pg_name online"
    echo "DATABASE_URL=$url"
fi

say "done"
