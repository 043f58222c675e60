#!/usr/bin/env python3
"""TOTP verifications per second at 50 concurrent connections.

A raw client speaks docs/protocol.md on the PAM socket of a private jctotpd,
as the shim does with `factors=totp`: connect, HELLO, read the code prompt,
ANSWER a code, read the VERDICT, close. 50 connections are kept busy at once
(spread over a few client processes so that the client is not the limit).

What counts as one verification: a login that reached a verdict after the
daemon checked the code: SUCCESS (accepted) or AUTH_ERR (refused: wrong code,
or a right code whose step was already used). Two phases are measured:
  wrong   every answer is a well-formed wrong code (a full ±1-step window check,
          the atomic attempt counter, a failure in the audit log);
  current every answer is the user's current code; the replay guard accepts it
          once per time-step per user (mostly during the warm-up) and refuses
          the rest as replays, so this phase measures the replay path.
The daemon runs with `fail_delay: 0` (the failure delay is a deliberate sleep,
not work) and `max_attempts: 100` per `fail_interval: 1` s over many users,
so no user is locked; a MAXTRIES verdict would be reported, never counted.

    python3 bench/verify_rate.py [--connections 50] [--seconds 5] [--procs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import struct
import sys
import time
from collections import Counter

import pyotp
from benchlib import cpu_seconds, ms, percentile, private_daemon

HEADER = struct.Struct("!I")


def frame(payload: str) -> bytes:
    data = payload.encode()
    return HEADER.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> str:
    (length,) = HEADER.unpack(await reader.readexactly(4))
    return (await reader.readexactly(length)).decode()


def wrong_code(totp: pyotp.TOTP) -> str:
    window = {totp.at(time.time() + d) for d in (-60, -30, 0, 30, 60)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in window)


async def one_login(path: str, user: str, code: str) -> str:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(frame(f"HELLO JCTOTP/1\ncall=auth\nservice=bench\nuser={user}\n"
                           "rhost=\ntty=\nfactors=totp\n"))
        prompt = await read_frame(reader)
        if not prompt.startswith("PROMPT_OFF "):
            return f"unexpected {prompt.split(' ', 1)[0]}"
        writer.write(frame(f"ANSWER {code}"))
        verdict = await read_frame(reader)
        return verdict.removeprefix("VERDICT ")
    finally:
        writer.close()


async def connection(paths: list[str], users: list[tuple[str, pyotp.TOTP]], mode: str,
                     count_from: float, stop_at: float, counts: Counter,
                     latencies: list[float], offset: int = 0) -> None:
    """One connection slot, used for login after login until stop_at; with several
    daemons (bench/fleet_rate.py) it goes to the next one's socket at each login."""
    i = 0
    while True:
        name, totp = users[i % len(users)]
        path = paths[(i + offset) % len(paths)]
        i += 1
        code = totp.now() if mode == "current" else wrong_code(totp)
        start = time.monotonic()
        verdict = await one_login(path, name, code)
        done = time.monotonic()
        if done >= stop_at:
            return
        if done >= count_from:
            counts[verdict] += 1
            latencies.append(done - start)


def client_process(args: tuple) -> tuple[Counter, list[float]]:
    paths, users, slots, mode, count_from, stop_at, first = args
    counts: Counter = Counter()
    latencies: list[float] = []
    totps = [(name, pyotp.TOTP(pyotp.parse_uri(uri).secret)) for name, uri in users]

    async def run() -> None:
        await asyncio.gather(*(connection(paths, totps[i::slots], mode, count_from, stop_at,
                                          counts, latencies, first + i) for i in range(slots)))

    asyncio.run(run())
    return counts, latencies


def measure(paths: list[str], users: list[tuple[str, str]], mode: str, connections: int,
            procs: int, seconds: float, warmup: float) -> tuple[Counter, list[float]]:
    """Verdict counts and per-login latencies (connect to verdict) of the measured part."""
    count_from = time.monotonic() + warmup
    stop_at = count_from + seconds
    slots = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
    jobs = [(paths, users[i::procs], slots[i], mode, count_from, stop_at, sum(slots[:i]))
            for i in range(procs)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        results = pool.map(client_process, jobs)
    return sum((c for c, _ in results), Counter()), [x for _, lat in results for x in lat]


def load_options(doc: str) -> argparse.Namespace:
    """The options of the load (this bench's and bench/fleet_rate.py's)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per phase")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--users", type=int, default=200)
    return parser.parse_args()


def add_users(daemon, n: int) -> list[tuple[str, str]]:
    """n enrolled users bench0..: (name, otpauth URI)."""
    return [(f"bench{i}", daemon.ok("user.add", name=f"bench{i}", mfa=True,
                                    system_account=False)["otpauth_uri"]) for i in range(n)]


def main() -> int:
    args = load_options(__doc__)
    with private_daemon(fail_delay=0, max_attempts=100, fail_interval=1,
                        log_level="error") as daemon:
        users = add_users(daemon, args.users)
        print(f"{args.connections} concurrent connections ({args.procs} client processes), "
              f"{args.users} users, factors=totp, fail_delay 0, {args.seconds:g} s per phase")
        for mode in ("wrong", "current"):
            cpu = cpu_seconds(daemon.proc.pid)
            counts, latencies = measure([daemon.pam_socket], users, mode, args.connections,
                                        args.procs, args.seconds, args.warmup)
            cores = (cpu_seconds(daemon.proc.pid) - cpu) / (args.seconds + args.warmup)
            verified = counts["SUCCESS"] + counts["AUTH_ERR"]
            other = {k: v for k, v in counts.items() if k not in ("SUCCESS", "AUTH_ERR")}
            print(f"  {mode:7} codes: {verified / args.seconds:8.0f} verifications/s "
                  f"({counts['SUCCESS']} accepted, {counts['AUTH_ERR']} refused"
                  + (f", not counted: {other}" if other else "")
                  + f"); p99 {ms(percentile(latencies, 99))}; jctotpd used {cores:.2f} CPU cores")
            if other:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
