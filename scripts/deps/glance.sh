#!/usr/bin/env bash
# The real OpenStack Glance for the Glance tests (tests/glance), idempotent and
# quick once done (a version check, well under a second):
#   - Glance 33.0.0 with glance_store 5.7.0, gunicorn 27.0.1,
#     python-swiftclient and wheel (multistore is built into a test session's
#     own folder without build isolation, ~2 s, no network), from PyPI, in its
#     own venv:
#     $MULTISTORE_GLANCE_VENV or /opt/multistore-glance/33.0.0/venv
#     (~1 min the first time; wheels only, no Debian -dev package);
#   - Debian's rados/rbd bindings linked into that venv (scripts/deps/rbd.sh
#     --link-python), so that glance_store's rbd driver works; as root, this
#     installs the Ceph packages first if they are missing.
# Glance itself is started and stopped by the tests (tests/backends/glance.py),
# on 127.0.0.1 only; multistore is not installed here: each test session puts
# its own build of the checkout on the server's path (PYTHONPATH), so that
# several checkouts can share this venv.
# Usage: scripts/deps/glance.sh [PROJECT_VENV]   (PROJECT_VENV is not used:
# the tests talk to Glance over HTTP with the standard library only)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
GLANCE_VERSION=33.0.0
GLANCE_STORE_VERSION=5.7.0
GUNICORN_VERSION=27.0.1
GLANCE_VENV=${MULTISTORE_GLANCE_VENV:-/opt/multistore-glance/$GLANCE_VERSION/venv}

quiet_pip() {
    "$@" 2>&1 | grep -v '^WARNING: Location' || true
    return "${PIPESTATUS[0]}"
}

installed() {
    [ -x "$GLANCE_VENV/bin/gunicorn" ] && [ -x "$GLANCE_VENV/bin/glance-manage" ] &&
    "$GLANCE_VENV/bin/python" - "$GLANCE_VERSION" "$GLANCE_STORE_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
assert version("glance") == sys.argv[1], version("glance")
assert version("glance_store") == sys.argv[2], version("glance_store")
import swiftclient, gunicorn, wheel, rados, rbd  # noqa
EOF
}

installed && exit 0

if [ ! -x "$GLANCE_VENV/bin/python" ]; then
    echo "glance: creating $GLANCE_VENV"
    mkdir -p "$(dirname "$GLANCE_VENV")"
    "$PYTHON" -m venv "$GLANCE_VENV"
fi
quiet_pip "$GLANCE_VENV/bin/pip" install -q "glance==$GLANCE_VERSION" \
    "glance_store==$GLANCE_STORE_VERSION" "gunicorn==$GUNICORN_VERSION" python-swiftclient wheel
# The Ceph packages (a no-op when present), then their bindings in this venv.
bash scripts/deps/rbd.sh
bash scripts/deps/rbd.sh --link-python "$GLANCE_VENV/bin/python"
installed || { echo "glance: $GLANCE_VENV is incomplete after the install" >&2; exit 1; }
