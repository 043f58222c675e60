#!/bin/bash
# A private PostgreSQL cluster for tests (issue 13): 127.0.0.1 only, its own port,
# its Unix socket inside DIR, run by the OS user postgres (postgres refuses root).
#
#   scripts/pg-test-cluster.sh init DIR PORT    create the cluster (not started)
#   scripts/pg-test-cluster.sh start DIR PORT   init on first use, then pg_ctl start
#   scripts/pg-test-cluster.sh stop DIR         fast shutdown (drops connections); no-op if down
#   scripts/pg-test-cluster.sh status DIR       exit 0 if running
#
# init makes role and database "jctotp" (the schema owner: CREATEROLE and
# pg_signal_backend, for `jctotp fleet host add|remove`) and the role's random password
# (scram-sha-256) in DIR/pgpass (0600, libpq passfile format): no password in any
# config file the product reads. Superuser access is "trust" over DIR/run, a
# socket dir only postgres and root can enter. TLS is on when DIR/server.pem and
# DIR/server.key exist at init. Log: DIR/postgres.log. tests/servers/postgres.py
# uses init, then runs the postmaster itself (so that it dies with the test run).
set -euo pipefail

bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { runuser -u postgres -- "$@"; }

cmd=${1:?usage: pg-test-cluster.sh init|start DIR PORT | stop|status DIR}
dir=${2:?DIR}
data=$dir/data
run=$dir/run

init() {
    local port=$1 password
    [ -s "$data/PG_VERSION" ] && return 0
    install -d -o postgres -g postgres -m 0700 "$dir" "$run"
    as_pg "$bindir/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 --no-instructions >"$dir/initdb.log"
    cat >>"$data/postgresql.conf" <<EOF
# pg-test-cluster.sh: private test cluster
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$run'
max_connections = 300
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = 'scram-sha-256'
EOF
    if [ -f "$dir/server.pem" ] && [ -f "$dir/server.key" ]; then
        chown postgres: "$dir/server.key"
        chmod 600 "$dir/server.key"
        printf "ssl = on\nssl_cert_file = '%s'\nssl_key_file = '%s'\n" \
            "$dir/server.pem" "$dir/server.key" >>"$data/postgresql.conf"
    fi
    password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    # Single-user mode: no server to start yet; the password goes over stdin, never on
    # a command line (ps) or into a config file.
    as_pg "$bindir/postgres" --single -D "$data" postgres >/dev/null 2>>"$dir/initdb.log" <<EOF
CREATE ROLE jctotp LOGIN CREATEROLE PASSWORD '$password';
GRANT pg_signal_backend TO jctotp;
CREATE DATABASE jctotp OWNER jctotp;
EOF
    (umask 077
     printf '127.0.0.1:*:*:jctotp:%s\nlocalhost:*:*:jctotp:%s\n' "$password" "$password" \
         >"$dir/pgpass")
}

case "$cmd" in
init)
    init "${3:?PORT}"
    ;;
start)
    port=${3:?PORT}
    init "$port"
    as_pg "$bindir/pg_ctl" -D "$data" -l "$dir/postgres.log" -o "-p $port" -w -t 30 -s start
    ;;
stop)
    if [ -s "$data/postmaster.pid" ] && as_pg "$bindir/pg_ctl" -D "$data" -s status >/dev/null; then
        as_pg "$bindir/pg_ctl" -D "$data" -m fast -w -t 30 -s stop
    fi
    ;;
status)
    as_pg "$bindir/pg_ctl" -D "$data" -s status >/dev/null
    ;;
*)
    echo "pg-test-cluster.sh: unknown command $cmd" >&2
    exit 2
    ;;
esac
