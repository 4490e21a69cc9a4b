#!/usr/bin/env bash
# Servers for the swift driver's tests, idempotent and quick once done:
#   - OpenStack Swift 2.38.3 (+ keystonemiddleware) in its own venv,
#     $MULTISTORE_SWIFT_VENV or /opt/multistore-swift-venv (~35 s the first time);
#   - Keystone 30.0.0 + gunicorn in its own venv, $MULTISTORE_KEYSTONE_VENV or
#     /opt/multistore-keystone-venv (~60 s the first time).
# No Debian package is needed: wheels only (PyECLib ships liberasurecode), no
# memcached (the test proxy keeps tempauth tokens in process), no rsync.
# The servers themselves are started and stopped by the tests
# (tests/backends/swift.py), on 127.0.0.1 only.
# Usage: scripts/deps/swift.sh [PROJECT_VENV]   (the project venv gets the
# driver's extra, python-swiftclient and keystoneauth1, from setup.cfg)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
SWIFT_VENV=${MULTISTORE_SWIFT_VENV:-/opt/multistore-swift-venv}
KEYSTONE_VENV=${MULTISTORE_KEYSTONE_VENV:-/opt/multistore-keystone-venv}

quiet_pip() {
    "$@" 2>&1 | grep -v '^WARNING: Location' || true
    return "${PIPESTATUS[0]}"
}

if [ ! -x "$SWIFT_VENV/bin/swift-proxy-server" ] ||
   ! "$SWIFT_VENV/bin/python" -c 'import keystonemiddleware' 2>/dev/null; then
    echo "swift: creating $SWIFT_VENV"
    "$PYTHON" -m venv "$SWIFT_VENV"
    quiet_pip "$SWIFT_VENV/bin/pip" install -q swift==2.38.3 keystonemiddleware==13.0.1
fi

if [ ! -x "$KEYSTONE_VENV/bin/keystone-manage" ] || [ ! -x "$KEYSTONE_VENV/bin/gunicorn" ]; then
    echo "swift: creating $KEYSTONE_VENV"
    "$PYTHON" -m venv "$KEYSTONE_VENV"
    quiet_pip "$KEYSTONE_VENV/bin/pip" install -q keystone==30.0.0 gunicorn==27.0.1
fi

PROJECT_VENV=${1:-}
if [ -n "$PROJECT_VENV" ] && [ -x "$PROJECT_VENV/bin/python" ] &&
   ! "$PROJECT_VENV/bin/python" -c 'import swiftclient, keystoneauth1' 2>/dev/null; then
    quiet_pip "$PROJECT_VENV/bin/pip" install -q -e '.[swift]'
fi
"$SWIFT_VENV/bin/python" -c 'import swift, keystonemiddleware'
"$KEYSTONE_VENV/bin/python" -c 'import keystone'
