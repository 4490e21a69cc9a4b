#!/usr/bin/env bash
# Sheepdog 1.0 (sheep, dog) for the sheepdog driver's tests, on Debian 12 (idempotent).
#
#   scripts/deps/sheepdog.sh [VENV]          make sheep and dog available (VENV, as ./run
#                                            passes it, is not used: there are no bindings)
#   scripts/deps/sheepdog.sh --print-bin     print the directory holding sheep and dog, or
#                                            exit 1 with a message saying how to provide them
#
# No Debian or PyPI package exists (upstream stopped in 2018), so this builds the
# vendored source once, into a cache directory named by the tarball's hash:
#
#   $MULTISTORE_SHEEPDOG_CACHE/<sha256 of the tarball, 16 hex>/bin/{sheep,dog}
#   (cache default /opt/multistore-sheepdog)
#
# The first of these wins, and nothing is built:
#   1. MULTISTORE_SHEEPDOG_BIN=DIR     a directory holding sheep and dog
#   2. sheep and dog already on PATH
# Otherwise the source is MULTISTORE_SHEEPDOG_TARBALL, or by default
# ../shared/vendor/sheepdog-1.0-3ebe5ea7.tar.gz beside the repository root.
# Building installs the build dependencies with apt (as root), takes about half a
# minute on 2 cores, and is a quick no-op once the cache holds the binaries.
# A machine with no source at all gets a warning here (the other backends' tests
# still run) and the sheepdog tests then fail with the same message.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEFAULT_TARBALL="$(dirname "$ROOT")/shared/vendor/sheepdog-1.0-3ebe5ea7.tar.gz"
TARBALL=${MULTISTORE_SHEEPDOG_TARBALL:-$DEFAULT_TARBALL}
CACHE=${MULTISTORE_SHEEPDOG_CACHE:-/opt/multistore-sheepdog}
# shellcheck source=scripts/deps/lib/apt.sh
. "$ROOT/scripts/deps/lib/apt.sh"
# autoconf..libtool for autogen.sh, yasm for the x86_64 erasure-code assembly,
# liburcu-dev for sheep itself; gcc, make and pkg-config are on the machine already
# but are listed so a bare one gets them too.
PACKAGES=(autoconf automake libtool pkg-config liburcu-dev yasm gcc make)

HOW_TO="provide Sheepdog in one of these ways: put the source tarball at
  $DEFAULT_TARBALL
(sheepdog 1.0, git archive of github.com/sheepdog/sheepdog 3ebe5ea7), or set
MULTISTORE_SHEEPDOG_TARBALL=/path/to/sheepdog-*.tar.gz, then run
  scripts/deps/sheepdog.sh   (as root: it installs the build dependencies);
or set MULTISTORE_SHEEPDOG_BIN=/dir/holding/sheep/and/dog; or put sheep and dog on PATH."

has_pair() {    # DIR holds executable sheep and dog
    [ -x "$1/sheep" ] && [ -x "$1/dog" ]
}

# The directory of binaries already available, without building; else nothing.
existing_bin() {
    if [ -n "${MULTISTORE_SHEEPDOG_BIN:-}" ]; then
        has_pair "$MULTISTORE_SHEEPDOG_BIN" || {
            echo "sheepdog.sh: MULTISTORE_SHEEPDOG_BIN=$MULTISTORE_SHEEPDOG_BIN holds no" \
                 "executable sheep and dog" >&2; return 1; }
        echo "$MULTISTORE_SHEEPDOG_BIN"; return 0
    fi
    local sheep dog
    sheep=$(command -v sheep || true)
    dog=$(command -v dog || true)
    if [ -n "$sheep" ] && [ -n "$dog" ] && [ "$(dirname "$sheep")" = "$(dirname "$dog")" ]; then
        dirname "$sheep"; return 0
    fi
    if [ -f "$TARBALL" ]; then
        local dir
        dir="$CACHE/$(sha256sum "$TARBALL" | cut -c1-16)"
        if has_pair "$dir/bin"; then echo "$dir/bin"; fi
    fi
    return 0
}

# Build $TARBALL into $CACHE/<hash>/ (bin/sheep, bin/dog); one build at a time (flock),
# in a scratch directory renamed into place at the end, so a failed or interrupted
# build never leaves a half-filled cache entry behind.
build() {
    local hash dest work
    hash=$(sha256sum "$TARBALL" | cut -c1-16)
    dest="$CACHE/$hash"
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
    if has_pair "$dest/bin"; then return 0; fi    # built by another process meanwhile
    apt_install_missing sheepdog.sh "${PACKAGES[@]}"
    work=$(mktemp -d "$CACHE/.build-$hash.XXXXXX")
    # shellcheck disable=SC2064    # expand now: $work is local
    trap "rm -rf '$work'" EXIT
    echo "sheepdog.sh: building $TARBALL into $dest (about 30 s)"
    local started=$SECONDS
    tar xzf "$TARBALL" -C "$work"
    local src
    src=$(find "$work" -mindepth 2 -maxdepth 2 -name configure.ac -printf '%h\n' | head -1)
    [ -n "$src" ] || { echo "sheepdog.sh: $TARBALL holds no configure.ac" >&2; return 1; }
    (
        cd "$src"
        ./autogen.sh >"$work/build.log" 2>&1
        # -fcommon: GCC 10+ otherwise fails to link ("multiple definition of sha1_final").
        # Only the local cluster driver is wanted: no corosync, no zookeeper.
        CFLAGS="-fcommon -O2" ./configure --disable-corosync --prefix="$dest" \
            >>"$work/build.log" 2>&1
        make -j"$(nproc)" >>"$work/build.log" 2>&1
        make install DESTDIR="$work/root" >>"$work/build.log" 2>&1
    ) || { tail -30 "$work/build.log" >&2; echo "sheepdog.sh: the build failed" >&2; return 1; }
    # make install put the tree at $work/root$dest; keep the two programs, flat.
    mkdir -p "$work/out/bin"
    cp "$work/root$dest/sbin/sheep" "$work/root$dest/bin/dog" "$work/out/bin/"
    ldd "$work/out/bin/sheep" | grep -q 'not found' && {
        echo "sheepdog.sh: sheep lacks a shared library:" >&2; ldd "$work/out/bin/sheep" >&2
        return 1; }
    echo "$TARBALL" >"$work/out/SOURCE"
    rm -rf "$dest"
    mv "$work/out" "$dest"
    echo "sheepdog.sh: built in $((SECONDS - started)) s: $dest/bin"
}

case "${1:-}" in
    --print-bin)
        bin=$(existing_bin)
        [ -n "$bin" ] || { echo "sheepdog.sh: no sheep/dog found; $HOW_TO" >&2; exit 1; }
        echo "$bin" ;;
    -*)
        echo "usage: $0 [VENV] | $0 --print-bin" >&2; exit 2 ;;
    *)
        bin=$(existing_bin)
        if [ -n "$bin" ]; then
            exit 0
        fi
        if [ ! -f "$TARBALL" ]; then
            echo "sheepdog.sh: WARNING: no Sheepdog source at $TARBALL: the sheepdog tests" \
                 "will fail; $HOW_TO" >&2
            exit 0
        fi
        build ;;
esac
