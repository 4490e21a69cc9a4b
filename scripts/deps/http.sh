#!/bin/sh
# System packages for the http driver's tests: nginx (the web server the
# tests run on 127.0.0.1) and the openssl CLI (the test CA and certificate).
# Idempotent; quick when everything is installed. Run as root on Debian 12.
# The tests start nginx themselves: apt does not start it here (policy-rc.d).
set -eu

missing=""
for pkg in nginx openssl; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0

export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
updated=""
for pkg in $missing; do
    if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [^(]'; then
        apt_get update -q
        updated=1
        break
    fi
done
# shellcheck disable=SC2086 # one word per package
if ! apt_get install -y -q --no-install-recommends $missing; then
    # A stale package list names versions the mirror no longer has.
    [ -z "$updated" ] || exit 1
    apt_get update -q
    apt_get install -y -q --no-install-recommends $missing
fi
