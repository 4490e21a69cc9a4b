# Sourced by scripts/deps/*.sh (not run by ./run: it is not in scripts/deps/
# itself). apt_install_missing NAME PACKAGE...: install those of the Debian
# packages that are missing, as root, idempotent and quick when none is.
# `apt-get update` runs only when a package has no install candidate. While
# apt runs, a policy-rc.d refuses every service start (exit 101) unless the
# one in place already does: packages such as rabbitmq-server or
# postgresql-15 must not start system services (the tests start private
# instances); whatever policy-rc.d was there is put back.

APT_POLICY=/usr/sbin/policy-rc.d
_APT_POLICY_BACKUP=

_apt_restore_policy() {
    if [ -n "$_APT_POLICY_BACKUP" ]; then
        if [ "$_APT_POLICY_BACKUP" = none ]; then
            rm -f "$APT_POLICY"
        else
            mv -f "$_APT_POLICY_BACKUP" "$APT_POLICY"
        fi
        _APT_POLICY_BACKUP=
    fi
}

_apt_deny_service_starts() {
    if [ -x "$APT_POLICY" ]; then
        local rc=0
        "$APT_POLICY" some-service start >/dev/null 2>&1 || rc=$?
        [ "$rc" = 101 ] && return 0
        _APT_POLICY_BACKUP=$(mktemp "$APT_POLICY.multistore.XXXXXX")
        cp -p "$APT_POLICY" "$_APT_POLICY_BACKUP"
    else
        _APT_POLICY_BACKUP=none
    fi
    trap _apt_restore_policy EXIT
    printf '#!/bin/sh\n# scripts/deps: no service starts while packages install\nexit 101\n' \
        > "$APT_POLICY"
    chmod 755 "$APT_POLICY"
}

apt_install_missing() {
    local who=$1 p policy need_update=0
    shift
    local missing=()
    for p in "$@"; do
        dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "$who: need root to install: ${missing[*]}" >&2
        return 1
    fi
    for p in "${missing[@]}"; do
        policy=$(apt-cache policy "$p" 2>/dev/null)
        if [ -z "$policy" ] || grep -q 'Candidate: (none)' <<<"$policy"; then
            need_update=1
        fi
    done
    if [ "$need_update" = 1 ]; then
        apt-get -o DPkg::Lock::Timeout=600 update -q
    fi
    echo "$who: installing ${missing[*]}"
    _apt_deny_service_starts
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
        --no-install-recommends "${missing[@]}"
    _apt_restore_policy
}
