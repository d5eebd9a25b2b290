#!/bin/sh
# Run packaging/check-install.sh against DEB in a throw-away copy of this host: an overlay of /
# (writes go to a tmpfs) in a private mount namespace, entered with chroot. apt, dpkg, adduser
# and the maintainer scripts run for real; when it exits, the host is exactly as before.
# Needs root and overlayfs.   Usage: packaging/in-throwaway-root.sh dist/blockhost-provisioner_*.deb
set -eu

here=$(cd "$(dirname "$0")" && pwd)
deb=$(realpath "$1")
top=$(mktemp -d "${TMPDIR:-/tmp}/blockhost-root.XXXXXX")
trap 'rmdir "$top" 2>/dev/null || true' EXIT

# shellcheck disable=SC2016 # expanded by the inner shell
unshare --mount --propagation private sh -eu -c '
    top=$1 deb=$2 here=$3
    mount -t tmpfs tmpfs "$top"
    mkdir "$top/upper" "$top/work" "$top/root"
    mount -t overlay overlay -o "lowerdir=/,upperdir=$top/upper,workdir=$top/work" "$top/root"
    for fs in proc sys dev; do mount --rbind "/$fs" "$top/root/$fs"; done
    cp "$deb" "$here/check-install.sh" "$top/root/tmp/"
    # A clean host: what this machine already has under these names is hidden in the copy only.
    rm -rf "$top/root/etc/blockhost" "$top/root/var/lib/blockhost"
    chroot "$top/root" sh /tmp/check-install.sh "/tmp/$(basename "$deb")"
' sh "$top" "$deb" "$here"
