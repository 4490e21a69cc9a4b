#!/usr/bin/env bash
# Ceph for the rbd driver and its tests, on Debian 12 (run as root; idempotent).
#
#   scripts/deps/rbd.sh [VENV]                   install the Ceph packages the tests need
#                                                (ceph-mon, ceph-osd, ceph-common, and the
#                                                Python bindings python3-rados, python3-rbd);
#                                                with VENV (as ./run passes it), then link
#                                                the bindings into VENV/bin/python as below
#   scripts/deps/rbd.sh --link-python VENV/bin/python
#                                                make Debian's rados/rbd bindings importable
#                                                from that (virtualenv's) interpreter
#
# No PyPI package provides the rados/rbd bindings: Debian builds them for its
# /usr/bin/python3 (3.11 on bookworm). Any CPython 3.11 shares their ABI, so
# --link-python puts symlinks to the two extension modules in a private
# directory of the venv (VENV/debian-ceph) and adds that directory, and only
# it, to sys.path with a .pth file. It refuses an interpreter of another ABI.
# Both forms are quick and change nothing when already done.
set -euo pipefail

PACKAGES=(ceph-mon ceph-osd ceph-common python3-rados python3-rbd uuid-runtime)
DIST=/usr/lib/python3/dist-packages

# shellcheck source=scripts/deps/lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"

link_python() {
    local py=$1
    [ -x "$py" ] || { echo "rbd.sh: $py is not an executable interpreter" >&2; return 1; }
    local suffix site prefix
    suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
    local rados_so="$DIST/rados$suffix" rbd_so="$DIST/rbd$suffix"
    if [ ! -e "$rados_so" ] || [ ! -e "$rbd_so" ]; then
        echo "rbd.sh: $rados_so or $rbd_so is missing: $py's ABI ($suffix) does not match" \
             "Debian's python3-rados/python3-rbd (run scripts/deps/rbd.sh as root first;" \
             "the bindings exist for CPython 3.11 only on bookworm)" >&2
        return 1
    fi
    prefix=$("$py" -c 'import sys; print(sys.prefix)')
    site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    mkdir -p "$prefix/debian-ceph" "$site"
    ln -sfn "$rados_so" "$prefix/debian-ceph/rados$suffix"
    ln -sfn "$rbd_so" "$prefix/debian-ceph/rbd$suffix"
    echo "$prefix/debian-ceph" > "$site/debian-ceph.pth"
    "$py" -c 'import rados, rbd' || {
        echo "rbd.sh: $py still cannot import rados/rbd" >&2; return 1; }
}

case "${1:-}" in
    --link-python)
        [ $# -eq 2 ] || { echo "usage: $0 --link-python PYTHON" >&2; exit 2; }
        link_python "$2" ;;
    -*)
        echo "usage: $0 [VENV] | $0 --link-python PYTHON" >&2; exit 2 ;;
    *)
        apt_install_missing rbd.sh "${PACKAGES[@]}"
        if [ -n "${1:-}" ]; then
            link_python "$1/bin/python"
        fi ;;
esac
