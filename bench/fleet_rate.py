#!/usr/bin/env python3
"""The fleet's cost (issue 13): TOTP verifications/s and latency at 50 concurrent logins
on SQLite, on one daemon on PostgreSQL, and on two daemons sharing one PostgreSQL.

The client is bench/verify_rate.py's (the shim's wire protocol with
`factors=totp`, 50 connections kept busy over client processes); here each
login is also timed, from connect to verdict, for p50/p99. The daemons run with
`fail_delay: 0` and `max_attempts: 100` per `fail_interval: 1` s over 200 users,
so nobody is locked. PostgreSQL is a private cluster on 127.0.0.1 (the tests'
tests/servers/postgres.py; needs scripts/install-test-servers.sh). For it the
bench also reports the database round trips per login: PostgreSQL's own count
of committed statements (pg_stat_database) divided by the logins (every store
call outside a unit of work is one autocommit statement, one round trip).

    python3 bench/fleet_rate.py [--connections 50] [--seconds 5] [--procs 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from urllib.parse import urlsplit

from benchlib import ms, percentile, private_daemon
from verify_rate import add_users, cpu_seconds, load_options, measure

MODES = ("wrong", "current")


def statements(pg, dbname: str) -> int:
    """Committed + rolled-back transactions of one database, as PostgreSQL counts them."""
    time.sleep(1.2)   # the statistics are flushed at most once a second
    out = pg.psql("SELECT pg_stat_clear_snapshot(); SELECT xact_commit + xact_rollback "
                  f"FROM pg_stat_database WHERE datname = '{dbname}';")
    return int(out.split()[-1])


def run_setup(title: str, hosts: list, users: list[tuple[str, str]], args: argparse.Namespace,
              pg=None, dbname: str = "") -> None:
    paths = [h.pam_socket for h in hosts]
    print(f"{title}:")
    for mode in MODES:
        before = statements(pg, dbname) if pg else 0
        cpu = sum(cpu_seconds(h.proc.pid) for h in hosts)
        counts, times = measure(paths, users, mode, args.connections, args.procs,
                                args.seconds, args.warmup, args.client)
        cores = (sum(cpu_seconds(h.proc.pid) for h in hosts) - cpu) / (args.seconds +
                                                                        args.warmup)
        verified = counts["SUCCESS"] + counts["AUTH_ERR"]
        other = {k: v for k, v in counts.items() if k not in ("SUCCESS", "AUTH_ERR")}
        line = (f"  {mode:7} codes: {verified / args.seconds:6.0f} verifications/s, "
                f"p50 {ms(percentile(times, 50))}, p99 {ms(percentile(times, 99))}; "
                f"jctotpd {cores:.2f} cores")
        if pg:
            # every login of the phase (warm-up and tail included) hit the database
            logins = len(times) * (args.seconds + args.warmup) / args.seconds
            line += f"; ~{(statements(pg, dbname) - before) / logins:.1f} round trips/login"
        if other:
            line += f"; not counted: {other}"
        print(line, flush=True)


def main() -> int:
    args = load_options(__doc__)
    cfg = dict(fail_delay=0, max_attempts=100, fail_interval=1, log_level="error")
    print(f"{args.connections} concurrent logins ({args.procs} client processes), "
          f"{args.users} users, factors=totp, fail_delay 0, {args.seconds:g} s per phase")

    with private_daemon(**cfg) as daemon:
        run_setup("SQLite, one daemon", [daemon], add_users(daemon, args.users), args)

    from servers.postgres import new_cluster
    pg = new_cluster()
    try:
        for count in (1, 2):
            uri = pg.new_database()
            dbname = urlsplit(uri).path.lstrip("/")
            with ExitStack() as stack:
                hosts = []
                for n in range(count):
                    overrides = dict(cfg, database=uri, host_name=f"bench-{n}")
                    host = stack.enter_context(private_daemon(**overrides, start=False))
                    if n == 0:
                        host.fleet_init()
                        key = host.config_path.parent / "state" / "secret.key"
                        # the database's guess ceiling (issue 22) would stop the "wrong"
                        # phase's checks after 20 per user: lifted, so each is computed
                        pg.psql("UPDATE jctotp_totp_rule SET guard_limit = 1000000000",
                                dbname)
                    else:
                        host.config["secret_key_file"] = str(key)
                    hosts.append(host.start())
                users = add_users(hosts[0], args.users)
                run_setup(f"PostgreSQL, {count} daemon(s) on one database", hosts, users,
                          args, pg, dbname)
    finally:
        pg.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
