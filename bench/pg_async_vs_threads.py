#!/usr/bin/env python3
"""The fleet store on the event loop or in worker threads (issue 13: "async or in the
worker pool (measure both)").

A login's store statements, the right-code path of a code-only login: `get`
(one read, in the conversation's first step), then `reserve_attempt` and
`accept_step` with the counter's reset (the code step), each ONE autocommit
statement, 50 logins in flight at once over 200 users, on a private PostgreSQL on 127.0.0.1
(tests/servers/postgres.py; scripts/install-test-servers.sh installs it):

- threads: what jctotpd does. The real PostgresStore (psycopg_pool.ConnectionPool,
  each statement borrows a connection, under its client-side deadline), each of
  the two steps one call into a pool of 16 worker threads (PAM_STEP_WORKERS),
  awaited from the event loop;
- async: the same SQL text (store/postgres.py's constants) on psycopg's
  AsyncConnectionPool, awaited on the loop itself, each statement borrowing a
  connection; at most 16 connections, as many as the threads keep busy.

Per mode: logins/s, p50/p99 of a login, and the CPU cores used by this process
(the daemon's side) and by PostgreSQL's processes. Rounds alternate the modes.

    python3 bench/pg_async_vs_threads.py [--concurrency 50] [--seconds 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg
import psycopg_pool
from benchlib import cpu_seconds, ms, percentile
from servers.postgres import PgCluster, new_cluster

from pam_jctotp.daemon import PAM_STEP_WORKERS
from pam_jctotp.store import postgres as pgstore

USERS = 200
INTERVAL, LIMIT = 1, 1_000_000   # the attempt window never fills: nobody is locked
STATEMENTS = 3

Login = Callable[[str, int], Awaitable[None]]


def threads_mode(store: pgstore.PostgresStore, workers: ThreadPoolExecutor) -> Login:
    def code_step(name: str, step: int) -> None:
        store.reserve_attempt(name, time.time(), INTERVAL, LIMIT)
        store.accept_step(name, step, reset_failures=True)

    async def login(name: str, step: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(workers, store.get, name)
        await loop.run_in_executor(workers, code_step, name, step)
    return login


def async_mode(pool: psycopg_pool.AsyncConnectionPool) -> Login:
    async def one(sql: str, params: object) -> None:
        async with pool.connection() as conn:
            await conn.execute(sql, params)   # type: ignore[arg-type]

    async def login(name: str, step: int) -> None:
        await one(pgstore.GET_USER, (name,))
        now = time.time()
        await one(pgstore.RESERVE_ATTEMPT, {"name": name, "now": now, "start": now - INTERVAL,
                                            "limit": LIMIT})
        await one(pgstore.ACCEPT_STEP_AND_RESET, (name, step))
    return login


def pg_cpu(pg: PgCluster) -> float:
    return sum(cpu_seconds(pid) for pid in pg.processes())


async def drive(login: Login, pg: PgCluster, args: argparse.Namespace
                ) -> tuple[int, list[float], float, float]:
    """`concurrency` tasks log in back to back; after the warm-up, each login is timed.
    Returns logins, latencies, this process's cores, PostgreSQL's cores."""
    steps = itertools.count(1)
    times: list[float] = []
    count_from = time.monotonic() + args.warmup
    stop_at = count_from + args.seconds

    async def slot(i: int) -> None:
        n = i
        while True:
            started = time.monotonic()
            await login(f"bench{n % USERS}", next(steps))
            done = time.monotonic()
            if done >= stop_at:
                return
            if started >= count_from:
                times.append(done - started)
            n += args.concurrency

    tasks = [asyncio.ensure_future(slot(i)) for i in range(args.concurrency)]
    await asyncio.sleep(args.warmup)
    cpu, pg0 = time.process_time(), pg_cpu(pg)
    await asyncio.sleep(args.seconds)
    cpu, pg0 = time.process_time() - cpu, pg_cpu(pg) - pg0
    await asyncio.gather(*tasks)
    return len(times), times, cpu / args.seconds, pg0 / args.seconds


async def run_threads(uri: str, pg: PgCluster, args: argparse.Namespace) -> tuple:
    store = pgstore.PostgresStore(uri, create=False)
    workers = ThreadPoolExecutor(max_workers=PAM_STEP_WORKERS, thread_name_prefix="pam")
    try:
        return await drive(threads_mode(store, workers), pg, args)
    finally:
        workers.shutdown()
        store.close()


async def run_async(uri: str, pg: PgCluster, args: argparse.Namespace) -> tuple:
    pool = psycopg_pool.AsyncConnectionPool(uri, min_size=2, max_size=PAM_STEP_WORKERS,
                                            kwargs={"autocommit": True}, open=False)
    await pool.open(wait=True)
    try:
        return await drive(async_mode(pool), pg, args)
    finally:
        await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2, help="threads then async, N times")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="the event loop (jctotpd uses uvloop when installed)")
    args = parser.parse_args()
    runner: Callable[..., object] = asyncio.run
    loop_name = "asyncio"
    if args.loop == "uvloop":
        try:
            import uvloop  # type: ignore[import-not-found, unused-ignore]
            runner, loop_name = uvloop.run, f"uvloop {uvloop.__version__}"
        except ImportError:
            pass
    print(f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__} libpq "
          f"{psycopg.pq.version()}), psycopg_pool {psycopg_pool.__version__}, {loop_name}, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print(f"{args.concurrency} logins in flight, {USERS} users, {STATEMENTS} statements per "
          f"login (get; reserve_attempt, accept_step + reset), {args.seconds:g} s per run")
    pg = new_cluster()
    try:
        uri = pg.new_database()
        store = pgstore.PostgresStore(uri)
        for i in range(USERS):
            store.add(f"bench{i}", is_admin=False, password_hash=None, now=time.time())
        store.close()
        results: dict[str, list[tuple]] = {"threads": [], "async": []}
        for _ in range(args.rounds):
            for mode, run in (("threads", run_threads), ("async", run_async)):
                logins, times, cores, pg_cores = runner(run(uri, pg, args))
                results[mode].append((logins, times, cores, pg_cores))
                print(f"  {mode:7}: {logins / args.seconds:6.0f} logins/s "
                      f"({STATEMENTS * logins / args.seconds:5.0f} statements/s), "
                      f"p50 {ms(percentile(times, 50))}, p99 {ms(percentile(times, 99))}; "
                      f"this process {cores:.2f} cores, PostgreSQL {pg_cores:.2f} cores",
                      flush=True)
        print("median of the rounds:")
        for mode, rows in results.items():
            rate = statistics.median(r[0] for r in rows) / args.seconds
            print(f"  {mode:7}: {rate:6.0f} logins/s, "
                  f"p50 {ms(statistics.median(percentile(r[1], 50) for r in rows))}, "
                  f"p99 {ms(statistics.median(percentile(r[1], 99) for r in rows))}, "
                  f"{statistics.median(r[2] for r in rows):.2f} cores "
                  f"(+ PostgreSQL {statistics.median(r[3] for r in rows):.2f})")
    finally:
        pg.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
