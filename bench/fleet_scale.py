#!/usr/bin/env python3
"""The fleet at scale (issue 24): many jctotpd hosts on one PostgreSQL, directly and
through PgBouncer (transaction pooling), at a realistic login rate per host.

Each host is a jctotpd with its own sockets, state and audit log, all on one
private database (tests/servers/postgres.py, max_connections 300) and one key,
with the default pool (`database_pool_min: 1`, `database_pool_max: 8`). The
hosts are started in steps (--hosts 10,50,100,200: 10, then 40 more, ...); after
each step, an open-loop load of --rate-per-host logins/s per host
(`factors=totp`, wrong codes, users spread over the hosts: bench/verify_rate.py's
client) runs for --seconds, and the bench prints:

- server connections: PostgreSQL's own count of this database's backends (at
  rest before the load, and the most seen during it),
- the server's memory for them: the summed PSS of those backends (per host),
- logins/s answered, p50/p99 (scheduled start to verdict), shed or failed,
- each daemon's idle memory (VmRSS after the load: median, max).

Directly, each host holds about 3 server connections at rest (its pool and its
LISTEN), so the direct mode stops where that would pass max_connections (said,
not run);
through PgBouncer (`database_pgbouncer: true`, default_pool_size --pool) the
server sees the bouncer's pool whatever the number of hosts.

    python3 bench/fleet_scale.py [--hosts 10,50,100,200] [--rate-per-host 0.5] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

from benchlib import ms, percentile, private_daemon
from verify_rate import add_users, measure_open

MAX_CONNECTIONS = 300   # the private cluster's (scripts/pg-test-cluster.sh)
PER_HOST = 3            # a direct host at rest, measured: its pool (grown past its minimum
#                         of 1 at start, kept for max_idle) and its LISTEN connection


def backends(pg, dbname: str) -> list[int]:
    out = pg.psql(f"SELECT pid FROM pg_stat_activity WHERE datname = '{dbname}' "
                  "AND backend_type = 'client backend'")
    return [int(p) for p in out.split()]


def pss_mb(pids: list[int]) -> float:
    """Summed proportional set size (shared pages split among their users), MB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Fleet:
    """Hosts on one database URI; grown step by step."""

    def __init__(self, stack: ExitStack, uri: str, pgbouncer: bool) -> None:
        self.stack = stack
        self.uri = uri
        self.pgbouncer = pgbouncer
        self.hosts: list = []
        self.key: Path | None = None
        self._lock = threading.Lock()

    def _config(self, n: int) -> dict:
        return dict(database=self.uri, database_pgbouncer=self.pgbouncer,
                    host_name=f"bench-{n}", fail_delay=0, max_attempts=100, fail_interval=1,
                    log_level="error")

    def grow(self, count: int, parallel: int = 4) -> None:
        if not self.hosts:
            first = self.stack.enter_context(private_daemon(start=False, **self._config(0)))
            first.fleet_init()
            self.key = first.config_path.parent / "state" / "secret.key"
            self.hosts.append(first.start())

        def one(n: int) -> None:
            host = self.stack.enter_context(private_daemon(start=False, **self._config(n)))
            host.config["secret_key_file"] = str(self.key)
            host.start()
            with self._lock:
                self.hosts.append(host)

        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(one, range(len(self.hosts), count)))


def run_step(title: str, fleet: Fleet, pg, dbname: str, users, args) -> None:
    count = len(fleet.hosts)
    time.sleep(2)   # the hosts' first syncs and pool fills are over
    at_rest = backends(pg, dbname)
    rest_pss = pss_mb(at_rest)
    most = [len(at_rest)]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            most.append(len(backends(pg, dbname)))
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rate = args.rate_per_host * count
    run = measure_open([h.pam_socket for h in fleet.hosts], users, "wrong", rate,
                       args.connections, args.procs, args.seconds, args.warmup,
                       os.getpid(), args.client)
    stop.set()
    watcher.join()
    time.sleep(1)
    rss = [rss_mb(h.proc.pid) for h in fleet.hosts]
    lat = run["latencies"]
    answered = run["verified_per_s"]
    other = {k: v for k, v in run["verdicts"].items() if k not in ("SUCCESS", "AUTH_ERR")}
    print(f"| {title} | {count} | {len(at_rest)} / {max(most)} | {rest_pss:.0f} MB "
          f"({rest_pss / count:.1f} MB/host) | {rate:.0f} → {answered:.0f}/s | "
          f"{ms(percentile(lat, 50)) if lat else '-'} / {ms(percentile(lat, 99)) if lat else '-'}"
          f" | {statistics.median(rss):.1f} / {max(rss):.1f} MB | {other or '-'} |",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", default="10,50,100,200",
                        help="host counts, ascending (each step adds hosts)")
    parser.add_argument("--rate-per-host", type=float, default=0.5,
                        help="logins per second per host (0.5: a busy bastion's 30/min)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=200, help="most logins in flight")
    parser.add_argument("--procs", type=int, default=1, help="client processes (python)")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--pool", type=int, default=20, help="PgBouncer default_pool_size")
    parser.add_argument("--client", choices=("c", "python"), default=None)
    parser.add_argument("--modes", default="direct,pgbouncer")
    args = parser.parse_args()
    steps = sorted(int(n) for n in args.hosts.split(","))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))   # the bouncer's clients

    import tempfile

    from servers.pgbouncer import PgBouncer
    from servers.postgres import new_cluster
    pg = new_cluster()
    print(f"{args.rate_per_host:g} logins/s per host (wrong codes, factors=totp, open loop), "
          f"{args.seconds:g} s per step; PostgreSQL max_connections {MAX_CONNECTIONS}; "
          f"{os.cpu_count()} cores shared by the hosts, the server, the bouncer and the client")
    print()
    print("| mode | hosts | server connections at rest / most under load | server memory "
          "for them (PSS) | logins/s offered → answered | p50 / p99 | jctotpd idle RSS "
          "median / max | other |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        for mode in args.modes.split(","):
            bouncer = None
            uri = pg.new_database()
            dbname = urlsplit(uri).path.lstrip("/")
            if mode == "pgbouncer":
                bouncer = PgBouncer(Path(tempfile.mkdtemp(prefix="jctotp-pgbouncer-")), pg,
                                    max_client_conn=max(steps) * 8 + 100,
                                    pool_size=args.pool).started()
                uri = bouncer.through(uri)
            try:
                with ExitStack() as stack:
                    fleet = Fleet(stack, uri, mode == "pgbouncer")
                    users: list = []
                    for count in steps:
                        if mode == "direct" and count * PER_HOST + 10 > MAX_CONNECTIONS:
                            print(f"| direct | {count} | would need ~{count * PER_HOST} "
                                  f"> max_connections {MAX_CONNECTIONS}: not run "
                                  "| | | | | |", flush=True)
                            continue
                        started = time.monotonic()
                        fleet.grow(count)
                        if not users:
                            users = add_users(fleet.hosts[0], args.users)
                        print(f"<!-- {count} hosts up in {time.monotonic() - started:.0f} s -->",
                              flush=True)
                        run_step(mode, fleet, pg, dbname, users, args)
            finally:
                if bouncer is not None:
                    bouncer.destroy()
    finally:
        pg.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
