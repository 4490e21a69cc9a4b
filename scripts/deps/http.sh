#!/bin/sh
# System packages for the http driver's tests: nginx (the web server the
# tests run on 127.0.0.1) and the openssl CLI (the test CA and certificate).
# Idempotent; quick when everything is installed. Run as root on Debian 12.
set -eu

missing=""
for pkg in nginx openssl; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0

export DEBIAN_FRONTEND=noninteractive
for pkg in $missing; do
    if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [^(]'; then
        apt-get -o DPkg::Lock::Timeout=600 update -q
        break
    fi
done
# shellcheck disable=SC2086 - one word per package
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing
