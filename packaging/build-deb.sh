#!/bin/sh
# Build the Debian package (debian/, dh-virtualenv) from a copy of the sources, so the build
# writes nothing into the working tree; the .deb, .buildinfo and .changes land in OUT_DIR.
# Usage: packaging/build-deb.sh [OUT_DIR]   (default: dist/, gitignored)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$root/dist"}
for tool in dpkg-buildpackage dh dh_virtualenv; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "make deb: $tool not found; install the build tools:" \
             "apt-get install devscripts debhelper dh-virtualenv python3-venv fakeroot" >&2
        exit 1
    fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/blockhost-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
mkdir "$work/src"
# What the package is made of; blockhost_data's links point into contracts/ and cloud-init/.
(cd "$root" && tar --exclude=__pycache__ --exclude='*.egg-info' --exclude='*.pyc' -cf - \
    pyproject.toml README.md requirements/runtime.lock listener provisioner blockhost_data \
    contracts/artifacts cloud-init systemd debian packaging docs/packaging.md) |
    tar -C "$work/src" -xf -

(cd "$work/src" && dpkg-buildpackage -b -us -uc)

mkdir -p "$out"
cp "$work"/*.deb "$work"/*.buildinfo "$work"/*.changes "$out"/
ls "$out"/blockhost-provisioner_*.deb
