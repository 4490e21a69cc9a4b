#!/usr/bin/env bash
# OpenStack Cinder for the cinder driver's tests, on Debian 12 (run as root;
# idempotent, and quick once done).
#
#   scripts/deps/cinder.sh [PROJECT_VENV]
#
#   - Debian packages: postgresql-15 and rabbitmq-server (private instances
#     are started by tests/backends/cinder.py, never the system services:
#     the install runs under a policy-rc.d that refuses every service start),
#     and Ceph through scripts/deps/rbd.sh (cinder-volume's RBD driver needs
#     the `ceph` CLI from ceph-common and the rados/rbd bindings);
#   - Cinder $CINDER_VERSION from PyPI with psycopg2-binary, in its own venv
#     ($MULTISTORE_CINDER_VENV or /opt/multistore-cinder/venv-$CINDER_VERSION;
#     ~1 min the first time, wheels only), with Debian's rados/rbd linked in
#     (rbd.sh --link-python);
#   - glance_store $GLANCE_STORE_VERSION with its cinder extra (cinderclient,
#     os-brick, oslo.privsep) in a venv of its own ($MULTISTORE_GLANCE_STORE_CINDER_VENV
#     or /opt/multistore-cinder/glance_store-$GLANCE_STORE_VERSION, rados/rbd
#     linked in): glance_store's own cinder driver, which the benchmark
#     (benchmarks/bench_cinder.py) runs beside multistore's, and the test of
#     multistore's cinder driver inside glance_store (the multistore_cinder
#     entry point, multistore installed there from the checkout by the test);
#   - with PROJECT_VENV (as ./run passes it): the client side there, the
#     `cinder` extra of setup.cfg (python-cinderclient, os-brick), and the
#     rados/rbd bindings that os-brick's RBD connector loads.
#
# The venv is complete only when its marker file names this script's pins;
# an interrupted install is thrown away and redone. Installs are serialised
# with a lock, so two test runs at once do not build the venv twice.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
CINDER_VERSION=29.0.0
PSYCOPG2_VERSION=2.9.13
PINS="cinder==$CINDER_VERSION psycopg2-binary==$PSYCOPG2_VERSION"
CINDER_VENV=${MULTISTORE_CINDER_VENV:-/opt/multistore-cinder/venv-$CINDER_VERSION}
MARKER=$CINDER_VENV/.multistore-installed
GLANCE_STORE_VERSION=5.7.0
GS_PINS="glance_store[cinder]==$GLANCE_STORE_VERSION wheel==0.45.1"
GS_VENV=${MULTISTORE_GLANCE_STORE_CINDER_VENV:-/opt/multistore-cinder/glance_store-$GLANCE_STORE_VERSION}
PACKAGES=(postgresql-15 rabbitmq-server)

# shellcheck source=scripts/deps/lib/apt.sh
. scripts/deps/lib/apt.sh

quiet_pip() {
    "$@" 2>&1 | grep -v '^WARNING: Location' || true
    return "${PIPESTATUS[0]}"
}

install_cinder_venv() {
    if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$PINS" ] &&
       [ -x "$CINDER_VENV/bin/cinder-volume" ]; then
        return 0
    fi
    mkdir -p "$(dirname "$CINDER_VENV")"
    exec 9>"$(dirname "$CINDER_VENV")/.install.lock"
    flock 9
    if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$PINS" ]; then
        exec 9>&-
        return 0
    fi
    echo "cinder: creating $CINDER_VENV ($PINS)"
    rm -rf "$CINDER_VENV"
    "$PYTHON" -m venv "$CINDER_VENV"
    quiet_pip "$CINDER_VENV/bin/pip" install -q --upgrade pip
    # shellcheck disable=SC2086
    quiet_pip "$CINDER_VENV/bin/pip" install -q $PINS
    bash scripts/deps/rbd.sh --link-python "$CINDER_VENV/bin/python"
    if ! out=$("$CINDER_VENV/bin/python" -c 'import cinder.volume.drivers.rbd, psycopg2, rados, rbd' 2>&1); then
        echo "cinder.sh: $CINDER_VENV cannot import cinder's RBD driver or psycopg2:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "$PINS" > "$MARKER"
    exec 9>&-
}

install_glance_store_venv() {
    local marker=$GS_VENV/.multistore-installed
    if [ -f "$marker" ] && [ "$(cat "$marker")" = "$GS_PINS" ]; then
        return 0
    fi
    mkdir -p "$(dirname "$GS_VENV")"
    exec 8>"$(dirname "$GS_VENV")/.install-glance-store.lock"
    flock 8
    if [ -f "$marker" ] && [ "$(cat "$marker")" = "$GS_PINS" ]; then
        exec 8>&-
        return 0
    fi
    echo "cinder: creating $GS_VENV ($GS_PINS)"
    rm -rf "$GS_VENV"
    "$PYTHON" -m venv "$GS_VENV"
    quiet_pip "$GS_VENV/bin/pip" install -q --upgrade pip
    # shellcheck disable=SC2086
    quiet_pip "$GS_VENV/bin/pip" install -q $GS_PINS
    bash scripts/deps/rbd.sh --link-python "$GS_VENV/bin/python"
    if ! out=$("$GS_VENV/bin/python" -c 'import glance_store._drivers.cinder.store, os_brick, cinderclient, rados, rbd' 2>&1); then
        echo "cinder.sh: $GS_VENV cannot import glance_store's cinder driver:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "$GS_PINS" > "$marker"
    exec 8>&-
}

apt_install_missing cinder "${PACKAGES[@]}"
# Ceph's packages (the `ceph` CLI for cinder-volume, the daemons for the
# tests' cluster) and, with a project venv, rados/rbd linked into it.
bash scripts/deps/rbd.sh ${1:+"$1"}
install_cinder_venv
install_glance_store_venv
# Idempotent (0.1 s): the bindings are linked even into a venv made before.
bash scripts/deps/rbd.sh --link-python "$CINDER_VENV/bin/python"

PROJECT_VENV=${1:-}
if [ -n "$PROJECT_VENV" ] && [ -x "$PROJECT_VENV/bin/python" ] &&
   ! "$PROJECT_VENV/bin/python" -c 'import cinderclient, os_brick' 2>/dev/null; then
    quiet_pip "$PROJECT_VENV/bin/pip" install -q -e '.[cinder]'
fi
if [ -n "$PROJECT_VENV" ]; then
    "$PROJECT_VENV/bin/python" -c 'import cinderclient, os_brick, rados, rbd'
fi
