# Sourced by build-testvm.sh and run-in-dm-guest.sh (which define `die`): a Debian kernel
# package unpacked, and its modules copied into a busybox initramfs.

# unpack_kernel DEB DIR
# Unpacks the kernel package DEB into DIR and sets KERNEL_IMAGE (its vmlinuz), KERNEL_VERSION
# and MODULES_ROOT (DIR, or DIR/usr where newer releases keep lib/modules), with the
# modules.dep that the package's postinst would have made (modprobe needs it).
unpack_kernel() {
    local deb="$1" dir="$2" kernels
    mkdir -p "$dir"
    dpkg-deb -x "$deb" "$dir"
    kernels=("$dir"/boot/vmlinuz-*)
    KERNEL_IMAGE="${kernels[0]}"
    [ -f "$KERNEL_IMAGE" ] || die "no /boot/vmlinuz-* in $deb"
    KERNEL_VERSION="${KERNEL_IMAGE##*/vmlinuz-}"
    if [ -d "$dir/lib/modules/$KERNEL_VERSION" ]; then MODULES_ROOT="$dir"; else MODULES_ROOT="$dir/usr"; fi
    [ -d "$MODULES_ROOT/lib/modules/$KERNEL_VERSION" ] || die "no modules for $KERNEL_VERSION in $deb"
    depmod -b "$MODULES_ROOT" "$KERNEL_VERSION"
}

# copy_modules MODULES_ROOT KERNEL_VERSION DEST_DIR LIST_FILE MODULE...
# Copies each MODULE and the modules it needs into DEST_DIR, uncompressed (busybox insmod reads
# no compressed modules), skipping those already there, and appends their file names to
# LIST_FILE in load order (modprobe lists a module after its dependencies).
copy_modules() {
    local mroot="$1" kver="$2" dest="$3" list="$4"
    shift 4
    local module kind path name
    for module in "$@"; do
        modprobe -d "$mroot" -S "$kver" --show-depends "$module" || die "module $module not found in $kver"
    done | while read -r kind path _; do
        [ "$kind" = insmod ] || continue  # "builtin X" lines need nothing
        name="$(basename "$path")"
        name="${name%.ko*}.ko"
        [ -e "$dest/$name" ] && continue
        case "$path" in
            *.ko.xz) xz -dc "$path" >"$dest/$name" ;;
            *.ko.zst) zstd -qdc "$path" >"$dest/$name" ;;
            *.ko.gz) gzip -dc "$path" >"$dest/$name" ;;
            *) cp "$path" "$dest/$name" ;;
        esac
        echo "$name" >>"$list"
    done
}
