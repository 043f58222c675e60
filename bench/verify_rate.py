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

Open loop (--rate R, or --rates R1,R2,... to sweep): instead of 50 connections
each starting its next login when its verdict arrives (a closed loop: its mean
latency is connections / throughput by Little's law), logins start on a fixed
schedule, R per second evenly spaced, dealt round-robin to the client
processes, with at most --connections in flight; a login whose start would
exceed that cap is not started and counted as shed. Latency runs from the
login's SCHEDULED start to its verdict, so a client that falls behind its
schedule adds to it (no coordinated omission). Wrong codes only (--mode).

The client (--client): `c` (the default when a C compiler is there) is
bench/loadgen.c, one epoll thread in one process (--procs is ignored), built
once into ~/.cache/jctotp-bench/; `python` is the asyncio client below, over
--procs processes. Every row says which one ran and how many cores it used:
the two share this machine with the daemon.

    python3 bench/verify_rate.py [--connections 50] [--seconds 5] [--procs 2]
    python3 bench/verify_rate.py --rates 500,1000,1500,2000,2500,3000
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import struct
import sys
import time
from collections import Counter

import loadgen
import pyotp
from benchlib import children, cpu_seconds, ms, percentile, private_daemon

HEADER = struct.Struct("!I")


def frame(payload: str) -> bytes:
    data = payload.encode()
    return HEADER.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> str:
    (length,) = HEADER.unpack(await reader.readexactly(4))
    return (await reader.readexactly(length)).decode()


def wrong_code(totp: pyotp.TOTP) -> str:
    return loadgen.wrong_code_at(totp, time.time())


def client_of(client: str | None) -> str:
    """--client: `c` or `python`; none given is `c` when it can be built."""
    return client or ("c" if loadgen.available() else "python")


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


def client_process(args: tuple) -> tuple[Counter, list[float], float, float]:
    """One Python client process: its counts, latencies, CPU and wall seconds."""
    paths, users, slots, mode, count_from, stop_at, first = args
    counts: Counter = Counter()
    latencies: list[float] = []
    totps = [(name, pyotp.TOTP(pyotp.parse_uri(uri).secret)) for name, uri in users]

    async def run() -> None:
        await asyncio.gather(*(connection(paths, totps[i::slots], mode, count_from, stop_at,
                                          counts, latencies, first + i) for i in range(slots)))

    cpu, wall = time.process_time(), time.monotonic()
    asyncio.run(run())
    return counts, latencies, time.process_time() - cpu, time.monotonic() - wall


def measure_closed(paths: list[str], users: list[tuple[str, str]], mode: str,
                   connections: int, procs: int, seconds: float, warmup: float,
                   client: str | None = None) -> dict:
    """A closed loop: the verdicts that arrived in the measured part, their
    latencies (connect to verdict, seconds), the client used and its cores."""
    if client_of(client) == "c":
        run = loadgen.run(paths, users, mode, connections=connections, seconds=seconds,
                          warmup=warmup)
        return {"verdicts": Counter(run["verdicts"]), "latencies": run["latencies"],
                "client": "c", "client_cores": run["client_cpu_s"] / max(run["wall_s"], 1e-9)}
    count_from = time.monotonic() + warmup
    stop_at = count_from + seconds
    slots = slot_counts(connections, procs)
    jobs = [(paths, users[i::procs], slots[i], mode, count_from, stop_at, sum(slots[:i]))
            for i in range(procs)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        results = pool.map(client_process, jobs)
    return {"verdicts": sum((r[0] for r in results), Counter()),
            "latencies": [x for r in results for x in r[1]], "client": "python",
            "client_cores": sum(cpu / wall for _, _, cpu, wall in results if wall > 0)}


def measure(paths: list[str], users: list[tuple[str, str]], mode: str, connections: int,
            procs: int, seconds: float, warmup: float,
            client: str | None = None) -> tuple[Counter, list[float]]:
    """Verdict counts and per-login latencies (connect to verdict) of the measured part."""
    run = measure_closed(paths, users, mode, connections, procs, seconds, warmup, client)
    return run["verdicts"], run["latencies"]


def arrivals(rate: float, procs: int, proc: int, start: float, end: float) -> list[float]:
    """The scheduled starts of client process `proc` of `procs`: the k-th login of
    the whole run starts at start + k / rate (for those before end) and goes to
    process k % procs."""
    count = max(0, math.ceil((end - start) * rate))
    return [start + k / rate for k in range(proc, count, procs)]


def slot_counts(connections: int, procs: int) -> list[int]:
    """connections dealt over procs client processes, the first ones one more."""
    return [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]


# (scheduled start, verdict time, verdict); a shed login has verdict time -1
Outcome = tuple[float, float, str]


async def open_loop(paths: list[str], users: list[tuple[str, pyotp.TOTP]], mode: str,
                    schedule: list[float], cap: int, offset: int) -> list[Outcome]:
    """Start a login at each scheduled time (late ones at once), never more than
    cap in flight; wait for the last verdict."""
    outcomes: list[Outcome] = []
    in_flight: set[asyncio.Task] = set()
    wrong: dict[str, tuple[int, str]] = {}   # user -> (time-step, a wrong code in its window)

    def code_for(name: str, totp: pyotp.TOTP) -> str:
        if mode == "current":
            return totp.now()
        step = int(time.time()) // 30
        if name not in wrong or wrong[name][0] != step:
            wrong[name] = (step, wrong_code(totp))
        return wrong[name][1]

    async def timed(path: str, name: str, code: str, scheduled: float) -> None:
        try:
            verdict = await one_login(path, name, code)
        except OSError as exc:   # e.g. the listen backlog full: reported, not counted
            verdict = f"error {type(exc).__name__}"
        outcomes.append((scheduled, time.monotonic(), verdict))

    for k, scheduled in enumerate(schedule):
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= cap:
            outcomes.append((scheduled, -1.0, "shed"))
            continue
        name, totp = users[k % len(users)]
        task = asyncio.create_task(timed(paths[(k + offset) % len(paths)], name,
                                         code_for(name, totp), scheduled))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight)
    return outcomes


def open_loop_process(args: tuple) -> tuple[list[Outcome], float, float]:
    """The outcomes of one client process, and its CPU and wall seconds from its
    first scheduled start to its last verdict (to tell whether the client was the limit)."""
    paths, users, mode, schedule, cap, offset = args
    totps = [(name, pyotp.TOTP(pyotp.parse_uri(uri).secret)) for name, uri in users]
    if schedule:
        time.sleep(max(0.0, schedule[0] - time.monotonic()))
    cpu, wall = time.process_time(), time.monotonic()
    outcomes = asyncio.run(open_loop(paths, totps, mode, schedule, cap, offset))
    return outcomes, time.process_time() - cpu, time.monotonic() - wall


def measure_open_c(paths: list[str], users: list[tuple[str, str]], mode: str, rate: float,
                   connections: int, seconds: float, warmup: float, pid: int) -> dict:
    """measure_open with bench/loadgen.c; its CPU is counted over the measured window."""
    start = time.monotonic() + 0.2   # the client has started and read its users by then
    count_from = start + warmup
    stop_at = count_from + seconds
    proc = loadgen.start(paths, users, mode, connections=connections, seconds=seconds,
                         warmup=warmup, rate=rate, start_at=start)
    try:
        time.sleep(max(0.0, count_from - time.monotonic()))
        cpu = cpu_seconds(pid)
        time.sleep(max(0.0, stop_at - time.monotonic()))
        cores = (cpu_seconds(pid) - cpu) / seconds
    finally:
        run = loadgen.result(proc)
    return {"verified_per_s": run["done_in_window"] / seconds,
            "verdicts": Counter(run["verdicts"]), "latencies": run["latencies"],
            "cores": cores, "client": "c",
            "client_cores": run["client_cpu_s"] / max(run["wall_s"], 1e-9)}


def measure_open(paths: list[str], users: list[tuple[str, str]], mode: str, rate: float,
                 connections: int, procs: int, seconds: float, warmup: float,
                 pid: int, client: str | None = None) -> dict:
    """One open-loop run at `rate`: warm-up, then `seconds` measured. Verifications/s
    count the verdicts that arrived inside the measured window; latencies and shed
    count the logins scheduled inside it."""
    if client_of(client) == "c":
        return measure_open_c(paths, users, mode, rate, connections, seconds, warmup, pid)
    start = time.monotonic() + 0.3   # the pool's processes are forked by then
    count_from = start + warmup
    stop_at = count_from + seconds
    caps = slot_counts(connections, procs)
    jobs = [(paths, users[i::procs], mode, arrivals(rate, procs, i, start, stop_at), caps[i], i)
            for i in range(procs)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        pending = pool.map_async(open_loop_process, jobs)
        time.sleep(max(0.0, count_from - time.monotonic()))
        cpu = cpu_seconds(pid)
        time.sleep(max(0.0, stop_at - time.monotonic()))
        cores = (cpu_seconds(pid) - cpu) / seconds
        parts = pending.get()
    outcomes = [o for part, _, _ in parts for o in part]
    client_cores = sum(cpu / wall for _, cpu, wall in parts if wall > 0)
    window = [o for o in outcomes if count_from <= o[0] < stop_at]
    verdicts = Counter(v for _, _, v in window)
    done_in_window = sum(1 for _, done, v in outcomes if count_from <= done < stop_at
                         and v in ("SUCCESS", "AUTH_ERR"))
    return {"verified_per_s": done_in_window / seconds, "verdicts": verdicts,
            "latencies": [done - s for s, done, v in window if v != "shed"], "cores": cores,
            "client": "python", "client_cores": client_cores}


def load_parser(doc: str) -> argparse.ArgumentParser:
    """The options of the load (this bench's and bench/fleet_rate.py's)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per phase")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--client", choices=("c", "python"), default=None,
                        help="the load generator: c (bench/loadgen.c, the default when cc "
                             "is there) or python (asyncio over --procs processes)")
    return parser


def load_options(doc: str) -> argparse.Namespace:
    return load_parser(doc).parse_args()


def add_users(daemon, n: int) -> list[tuple[str, str]]:
    """n enrolled users bench0..: (name, otpauth URI)."""
    return [(f"bench{i}", daemon.ok("user.add", name=f"bench{i}", mfa=True,
                                    system_account=False)["otpauth_uri"]) for i in range(n)]


def wait_serving(daemon, processes: int, timeout: float = 30.0) -> None:
    """jctotpd's extra PAM processes start after it: until they are there, and 2 s
    more for them to load (their "serving" line is INFO; the bench logs errors only)."""
    deadline = time.monotonic() + timeout
    while processes > 1 and time.monotonic() < deadline:
        if len(children(daemon.proc.pid)) >= processes - 1:
            time.sleep(2.0)
            return
        time.sleep(0.05)


def parse_rates(text: str) -> list[float]:
    """`500,1000,1500` -> [500.0, 1000.0, 1500.0]; every rate above zero."""
    rates = [float(part) for part in text.split(",") if part.strip()]
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"rates must be positive numbers: {text!r}")
    return rates


def client_text(args: argparse.Namespace) -> str:
    if client_of(args.client) == "c":
        return "client: bench/loadgen.c (one process)"
    return f"client: python asyncio ({args.procs} processes)"


def sweep(daemon, users: list[tuple[str, str]], args: argparse.Namespace) -> int:
    print(f"open loop: {client_text(args)}, at most {args.connections} logins in "
          f"flight, {args.users} users, factors=totp, {args.mode} codes, fail_delay 0, "
          f"{args.warmup:g} s warm-up + {args.seconds:g} s measured per rate; "
          "latency from the scheduled start")
    print(f"  {'offered/s':>9} {'verified/s':>10} {'p50':>9} {'p99':>9} {'shed':>6} "
          f"{'jctotpd cores':>13} {'client cores':>16}")
    failed = 0
    for rate in args.rates:
        run = measure_open([daemon.pam_socket], users, args.mode, rate, args.connections,
                           args.procs, args.seconds, args.warmup, daemon.proc.pid, args.client)
        verdicts, lat = run["verdicts"], run["latencies"]
        other = {k: v for k, v in verdicts.items() if k not in ("SUCCESS", "AUTH_ERR", "shed")}
        p50 = ms(percentile(lat, 50)) if lat else "-"
        p99 = ms(percentile(lat, 99)) if lat else "-"
        print(f"  {rate:9.0f} {run['verified_per_s']:10.0f} {p50:>9} {p99:>9} "
              f"{verdicts['shed']:6d} {run['cores']:13.2f} "
              f"{run['client_cores']:7.2f} ({run['client']:>6})"
              + (f"  not counted: {other}" if other else ""), flush=True)
        failed |= bool(other)
    return 1 if failed else 0


def main() -> int:
    parser = load_parser(__doc__)
    parser.add_argument("--rate", type=parse_rates, dest="rates",
                        help="open loop: logins started per second (fixed schedule)")
    parser.add_argument("--rates", type=parse_rates, dest="rates",
                        help="open loop, a sweep: e.g. 500,1000,1500,2000,2500,3000")
    parser.add_argument("--mode", choices=("wrong", "current"), default="wrong",
                        help="open loop: the codes answered")
    parser.add_argument("--pam-processes", type=int, default=1,
                        help="jctotpd's pam_processes (its cores: all its processes)")
    args = parser.parse_args()
    with private_daemon(fail_delay=0, max_attempts=100, fail_interval=1,
                        log_level="error", pam_processes=args.pam_processes) as daemon:
        wait_serving(daemon, args.pam_processes)
        users = add_users(daemon, args.users)
        print(f"jctotpd: pam_processes {args.pam_processes}")
        if args.rates:
            return sweep(daemon, users, args)
        print(f"{args.connections} concurrent connections ({client_text(args)}), "
              f"{args.users} users, factors=totp, fail_delay 0, {args.seconds:g} s per phase")
        for mode in ("wrong", "current"):
            cpu = cpu_seconds(daemon.proc.pid)
            run = measure_closed([daemon.pam_socket], users, mode, args.connections,
                                 args.procs, args.seconds, args.warmup, args.client)
            counts, latencies = run["verdicts"], run["latencies"]
            cores = (cpu_seconds(daemon.proc.pid) - cpu) / (args.seconds + args.warmup)
            verified = counts["SUCCESS"] + counts["AUTH_ERR"]
            other = {k: v for k, v in counts.items() if k not in ("SUCCESS", "AUTH_ERR")}
            print(f"  {mode:7} codes: {verified / args.seconds:8.0f} verifications/s "
                  f"({counts['SUCCESS']} accepted, {counts['AUTH_ERR']} refused"
                  + (f", not counted: {other}" if other else "")
                  + f"); p99 {ms(percentile(latencies, 99))}; jctotpd used {cores:.2f} CPU cores, "
                  f"the {run['client']} client {run['client_cores']:.2f}")
            if other:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
