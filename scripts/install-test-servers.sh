#!/bin/bash
# Install Debian's PostgreSQL, PgBouncer and OpenLDAP for tests/fleet and tests/ldap WITHOUT
# letting their maintainer scripts start system servers: slapd's postinst would
# start a slapd on :389 on every interface, postgresql's would create and start a
# "main" cluster, pgbouncer's would start one on :6432. The tests start private
# servers on 127.0.0.1 in temp dirs
# (scripts/pg-test-cluster.sh, tests/ldap/conftest.py); nothing else may run.
#
#   scripts/install-test-servers.sh      (root; idempotent; called by scripts/test.sh)
set -euo pipefail

pkgs=(postgresql libpq5 pgbouncer slapd ldap-utils openssl iproute2)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]} (no services started)"

# policy-rc.d exit 101 = "action forbidden": invoke-rc.d and deb-systemd-invoke
# start nothing while it is there. Keep whatever policy the machine had before.
policy=/usr/sbin/policy-rc.d
saved=""
if [ -e "$policy" ]; then
    saved=$(mktemp)
    cp -p "$policy" "$saved"
fi
restore_policy() {
    if [ -n "$saved" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' >"$policy"
chmod 755 "$policy"

# slapd: no /etc/ldap/slapd.d database at all (the tests write their own cn=config).
echo 'slapd slapd/no_configuration boolean true' | debconf-set-selections

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
apt-get update -qq
# postgresql-common first: its createcluster.conf must say "no main cluster"
# before postgresql-15's postinst runs pg_createcluster.
if ! dpkg-query -W -f='${Status}' postgresql-common 2>/dev/null | grep -q "ok installed"; then
    apt_install postgresql-common
fi
sed -ri 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
    /etc/postgresql-common/createcluster.conf
grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf
apt_install "${missing[@]}"

# Under systemd the units were enabled (enabling is not a start): keep them off at boot.
if [ -d /run/systemd/system ]; then
    systemctl disable --quiet slapd pgbouncer 2>/dev/null || true
fi

# Verify: no system slapd/postgres, and nothing of theirs on a non-loopback address.
if ss -H -ltn | awk '{print $4}' | grep -qE ':(389|636|5432|6432)$'; then
    echo "install-test-servers.sh: a system LDAP/PostgreSQL/PgBouncer server is listening:" >&2
    ss -ltnp >&2
    exit 1
fi
if ss -H -ltnp | grep -E '"(slapd|postgres|pgbouncer)"' | awk '{print $4}' | grep -vqE '^(127\.|\[::1\]:)'; then
    echo "install-test-servers.sh: slapd/postgres/pgbouncer listening beyond loopback:" >&2
    ss -ltnp >&2
    exit 1
fi
