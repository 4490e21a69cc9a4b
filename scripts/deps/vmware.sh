#!/usr/bin/env bash
# vcsim (govmomi's vCenter simulator) for the vmware driver's tests, on Debian 12
# (run as root; idempotent).
#
#   scripts/deps/vmware.sh [VENV]     install golang-go and golang-github-vmware-govmomi-dev,
#                                     build vcsim from tests/backends/vcsim/main.go unless
#                                     built; with VENV (as ./run passes it), make sure
#                                     oslo.vmware is installed in it (the "vmware" extra)
#   scripts/deps/vmware.sh --binary   install and build as above, then print the binary's path
#                                     (everything else goes to stderr)
#
# Debian ships govmomi's simulator package but not the vcsim command, so
# main.go is our own; it builds offline in GOPATH mode against Debian's Go
# sources (/usr/share/gocode). The binary is kept in
# ${MULTISTORE_CACHE:-/var/cache/multistore}/vcsim/KEY/vcsim, KEY a hash of
# main.go and of the versions of the packages it is built from: a cold
# build takes 20-35 s on 2 idle cores (about 60 s of CPU), a rebuild after
# a change of main.go a few seconds (Go's build cache, ~170 MB, is kept
# beside it), nothing is done when the binary for KEY exists, and binaries
# of other keys are removed.
set -euo pipefail
# shellcheck source=scripts/deps/lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SRC=$ROOT/tests/backends/vcsim/main.go
PACKAGES=(golang-go golang-github-vmware-govmomi-dev)
GOPATH_DEBIAN=/usr/share/gocode
CACHE=${MULTISTORE_CACHE:-/var/cache/multistore}/vcsim

build_key() {
    {
        sha256sum <"$SRC"
        dpkg-query -W -f='${Package} ${Version}\n' "${PACKAGES[@]}" golang-github-google-uuid-dev
        go version
    } | sha256sum | cut -c1-16
}

# Prints the binary's path; builds it first unless it is there.
build() {
    local key dir tmp started
    key=$(build_key)
    dir=$CACHE/$key
    if [ -x "$dir/vcsim" ]; then
        echo "$dir/vcsim"
        return 0
    fi
    mkdir -p "$CACHE"
    tmp=$(mktemp -d "$CACHE/build.XXXXXX")
    started=$(date +%s)
    echo "vmware.sh: building vcsim into $dir" >&2
    if ! (cd "$(dirname "$SRC")" && GO111MODULE=off GOPATH=$GOPATH_DEBIAN GOFLAGS= \
            GOCACHE=$CACHE/go-build GOPROXY=off \
            go build -trimpath -ldflags="-s -w" -o "$tmp/vcsim" main.go) >&2; then
        rm -rf "$tmp"
        return 1
    fi
    # Another build of the same key may have finished first: either is good.
    mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
    # Binaries of other keys are stale (a running one keeps running).
    find "$CACHE" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended \
        -regex '.*/[0-9a-f]{16}' ! -name "$key" -exec rm -rf {} +
    echo "vmware.sh: built in $(( $(date +%s) - started )) s" >&2
    echo "$dir/vcsim"
}

ensure_oslo_vmware() {
    local venv=$1
    "$venv/bin/python" -c 'import oslo_vmware' 2>/dev/null && return 0
    "$venv/bin/pip" install -q -e "$ROOT[vmware]" 2>&1 | grep -v '^WARNING: Location' || true
    "$venv/bin/python" -c 'import oslo_vmware'
}

case "${1:-}" in
    --binary)
        [ $# -eq 1 ] || { echo "usage: $0 [VENV] | $0 --binary" >&2; exit 2; }
        apt_install_missing vmware.sh "${PACKAGES[@]}" >&2
        build ;;
    -*)
        echo "usage: $0 [VENV] | $0 --binary" >&2; exit 2 ;;
    *)
        apt_install_missing vmware.sh "${PACKAGES[@]}"
        build >/dev/null
        if [ -n "${1:-}" ]; then
            ensure_oslo_vmware "$1"
        fi ;;
esac
