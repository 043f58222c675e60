#!/usr/bin/env python3
"""pam_jctotp against Debian's pam_google_authenticator, side by side (issue 15).

Both modules run in one process through one ctypes driver (tests/pam/pamdriver.py:
pam_start_confdir + pam_authenticate [+ pam_acct_mgmt]) with service files in a
temp dir, so /etc/pam.d is never read or written. libpam-google-authenticator
is installed with apt-get if it is missing (as root).

Every login is a first use: one fresh user per login, ours created over the
control socket of a private jctotpd (bench/benchlib.py), GA's a secret file of
its own (`secret=<tmp>/${USER}.ga user=root`). Codes come from each secret and
the clock (pyotp). The two modules alternate login by login (ABBA order), after
a few untimed warm-up logins.

Figures (ours, GA's, ours/GA):
  auth        one TOTP step, auth only: our `factors=totp` vs GA (median, p99)
  auth+acct   the same plus the account stack (ours: `account required
              pam_jctotp.so`, a second connection; GA has no account stage,
              pam_permit stands in)
  wrong code  ours minus the deliberate fail_delay, next to our right code
  throughput  wrong codes at 50 concurrent logins through the same driver, and
              the daemon alone with a raw protocol client (bench/verify_rate.py),
              with p99 and the CPU cores jctotpd used
  memory      jctotpd's RSS idle, peak during a storm of argon2 password logins,
              and after it (GA runs inside the PAM process: no daemon to measure)
  ssh         with --ssh: the whole SSH login (password + code, host's ssh against
              sshd in Docker) against pam_unix + GA, the /etc/shadow hash yescrypt
              at a cost no cheaper to attack than our argon2id
              (bench/ssh_login.py --classic)

    python3 bench/compare_ga.py [--quick] [--logins 300] [--profile out.json] [--ssh]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pamdriver as pd  # on sys.path via benchlib
import pyotp
from benchlib import (
    REPO,
    cpu_seconds,
    ga_secret_text,
    memory_mb,
    ms,
    percentile,
    private_daemon,
    us,
)
from verify_rate import add_users, measure_open, wait_serving, wrong_code
from verify_rate import measure as raw_client_measure

GA_PACKAGE = "libpam-google-authenticator"
PASSWORD = "correct horse battery"


# --- google-authenticator ---------------------------------------------------------


def ga_module() -> str:
    """The path of pam_google_authenticator.so, installing the package if missing."""
    def installed() -> str | None:
        out = subprocess.run(["dpkg-query", "-L", GA_PACKAGE], capture_output=True, text=True)
        found = [p for p in out.stdout.split() if p.endswith("/pam_google_authenticator.so")]
        return found[0] if out.returncode == 0 and found else None

    path = installed()
    if path is None:
        if os.geteuid() != 0:
            sys.exit(f"compare_ga: {GA_PACKAGE} is missing; run as root to install it")
        print(f"installing {GA_PACKAGE} (apt-get)", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", GA_PACKAGE],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        path = installed()
        if path is None:
            sys.exit(f"compare_ga: {GA_PACKAGE} installed but no pam_google_authenticator.so")
    return path


class GaUsers:
    """Secret files in the layout google-authenticator(1) writes for
    `google-authenticator -t -d -r 3 -R 30 -w 3` (time-based, no reuse,
    3 logins per 30 s, window of 3 codes = ours: ±1 step)."""

    def __init__(self, directory: Path, rate_limit: bool = True) -> None:
        self.dir = directory
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self.rate_limit = rate_limit
        self.count = 0

    def add(self, prefix: str = "ga") -> tuple[str, pyotp.TOTP]:
        self.count += 1
        name = f"{prefix}{self.count}"
        secret = pyotp.random_base32()
        path = self.dir / f"{name}.ga"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)  # GA wants <= 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(ga_secret_text(secret, self.rate_limit))
        return name, pyotp.TOTP(secret)

    @property
    def options(self) -> str:
        # ${USER} is expanded by the module; user=root: files owned by root,
        # no passwd entry needed for the bench users.
        return f"secret={self.dir}/${{USER}}.ga user=root"


def totp_of(uri: str) -> pyotp.TOTP:
    """The TOTP of an otpauth:// URI (the key the daemon showed)."""
    return pyotp.TOTP(pyotp.parse_uri(uri).secret)


def quiet_console() -> None:
    """Re-run this script with /dev/console bound to /dev/null in a private
    mount namespace, when there is no syslog socket.

    GA syslogs every login ("Accepted google_authenticator for ..."); without
    /dev/log, glibc's syslog falls back (LOG_CONS) to writing the line to
    /dev/console, a serial console here that costs GA 0.3-3 ms a login. On a host
    with journald or rsyslog that is one datagram. The namespace is this
    process tree's own: the host's /dev is not touched.
    """
    if os.path.exists("/dev/log") or os.environ.get("JCTOTP_BENCH_NS") or os.geteuid() != 0:
        return
    unshare = shutil.which("unshare")
    if unshare is None:
        print("note: no /dev/log and no unshare: GA's syslog lines go to the console")
        return
    namespace = [unshare, "--mount", "--propagation", "private", "sh", "-c"]
    bind = "mount --bind /dev/null /dev/console"
    if subprocess.run([*namespace, bind], capture_output=True).returncode != 0:
        print("note: no /dev/log and no private mount namespace here: "
              "GA's syslog lines go to the console")
        return
    os.environ["JCTOTP_BENCH_NS"] = "1"
    os.execv(unshare, [*namespace, f'{bind} && exec "$0" "$@"', sys.executable, *sys.argv])


# --- one login, timed by the driver ------------------------------------------------


@dataclass
class Side:
    """One module's service in the temp confdir, and how it gets a fresh user."""

    service: str
    new_user: Callable[[], tuple[str, pyotp.TOTP]]
    call: str = "auth"

    def login(self, confdir: Path, wrong: bool = False,
              user: tuple[str, pyotp.TOTP] | None = None) -> tuple[float, int]:
        name, totp = user or self.new_user()
        code = wrong_code(totp) if wrong else totp.now()
        result = pd.run(confdir, self.service, name, [code], call=self.call)
        return result.elapsed, result.rc


USERS_AHEAD = True  # --make-users inline: each user made right before its login (the old way)


def interleaved(confdir: Path, ours: Side, ga: Side, logins: int, warmup: int,
                wrong: bool = False) -> tuple[list[float], list[float]]:
    """`logins` timed logins each, alternating ABBA so neither always goes first.

    The fresh users are made before the loop (`--make-users ahead`, the default):
    a user.add over the control socket right before each login (`inline`)
    leaves the daemon busy with that request's aftermath (its epilogue, the
    garbage of 13 ms of work) while the login runs, which no real login sees."""
    want = pd.PAM_AUTH_ERR if wrong else pd.PAM_SUCCESS
    times: dict[str, list[float]] = {"ours": [], "ga": []}
    ahead: dict[str, list[tuple[str, pyotp.TOTP]]] = {"ours": [], "ga": []}
    if USERS_AHEAD:
        ahead = {"ours": [ours.new_user() for _ in range(warmup + logins)],
                 "ga": [ga.new_user() for _ in range(warmup + logins)]}
        time.sleep(0.5)  # the daemon's last control request fully done
    for i in range(warmup + logins):
        order = [("ours", ours), ("ga", ga)] if i % 2 == 0 else [("ga", ga), ("ours", ours)]
        for label, side in order:
            user = ahead[label].pop() if ahead[label] else None
            elapsed, rc = side.login(confdir, wrong, user)
            if rc != want:
                sys.exit(f"compare_ga: {label} login {i} ({side.service}): "
                         f"{pd.pam_strerror(rc)}, expected {pd.pam_strerror(want)}")
            if i >= warmup:
                times[label].append(elapsed)
    return times["ours"], times["ga"]


def _wrong_logins(job: tuple[Path, str, list[tuple[str, str]], float]) -> list[float]:
    confdir, service, users, start_after = job
    time.sleep(start_after)
    times = []
    for name, secret in users:
        result = pd.run(confdir, service, name, [wrong_code(pyotp.TOTP(secret))])
        if result.rc != pd.PAM_AUTH_ERR:
            raise RuntimeError(f"{service}: {result.name}, expected PAM_AUTH_ERR")
        times.append(result.elapsed)
    return times


def parallel_wrong_logins(confdir: Path, side: Side, logins: int, procs: int,
                          fail_delay: float) -> list[float]:
    """One wrong-code login per fresh user, `procs` processes at a time (processes,
    not threads: no GIL hand-offs inside the timed part). Their starts are spread
    over one fail_delay, so that the logins do not all run at the same moments
    (started together, every 2 s ten logins met on two cores, and the figure
    measured that crowd instead of the work of a failure)."""
    users = [side.new_user() for _ in range(logins)]
    jobs = [(confdir, side.service, [(n, t.secret) for n, t in users[i::procs]],
             i * fail_delay / procs) for i in range(procs)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        return [t for times in pool.map(_wrong_logins, jobs) for t in times]


def _floor_server(path: str, ready: Any) -> None:
    """A PAM socket that does no work: HELLO -> code prompt, ANSWER -> SUCCESS
    (asyncio streams, as jctotpd uses them)."""
    import asyncio
    import struct

    header = struct.Struct("!I")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for reply in (b"PROMPT_OFF Verification code: ", b"VERDICT SUCCESS"):
                (length,) = header.unpack(await reader.readexactly(4))
                await reader.readexactly(length)
                writer.write(header.pack(len(reply)) + reply)
                await writer.drain()
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_unix_server(serve, path)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


@contextmanager
def floor_daemon(directory: Path) -> Iterator[str]:
    path = str(directory / "floor.sock")
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_floor_server, args=(path, ready), daemon=True)
    proc.start()
    try:
        ready.wait(10)
        yield path
    finally:
        proc.terminate()
        proc.join()


# --- throughput through the driver -------------------------------------------------


def _driver_worker(job: tuple) -> tuple[Counter, list[float]]:
    confdir, service, users, threads, count_from, stop_at = job
    counts: Counter = Counter()
    latencies: list[float] = []
    lock = threading.Lock()

    def slot(k: int) -> None:
        mine = users[k::threads]
        i = 0
        while True:
            name, secret = mine[i % len(mine)]
            i += 1
            result = pd.run(confdir, service, name, [wrong_code(pyotp.TOTP(secret))])
            done = time.monotonic()
            if done >= stop_at:
                return
            if done >= count_from:
                with lock:
                    counts[result.name] += 1
                    latencies.append(result.elapsed)

    workers = [threading.Thread(target=slot, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return counts, latencies


def driver_rate(confdir: Path, service: str, users: list[tuple[str, str]], connections: int,
                procs: int, seconds: float, warmup: float) -> tuple[Counter, list[float]]:
    """Wrong-code logins kept `connections` at once (procs x threads) through libpam."""
    count_from = time.monotonic() + warmup
    stop_at = count_from + seconds
    per = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
    jobs = [(confdir, service, users[i::procs], per[i], count_from, stop_at)
            for i in range(procs)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        results = pool.map(_driver_worker, jobs)
    return sum((c for c, _ in results), Counter()), [x for _, lat in results for x in lat]


# --- printing ------------------------------------------------------------------------


def row(label: str, ours: float | None, ga: float | None, fmt: Callable[[float], str] = us,
        note: str = "") -> None:
    o = fmt(ours) if ours is not None else "n/a"
    g = fmt(ga) if ga is not None else "n/a"
    ratio = f"{ours / ga:.2f}×" if ours is not None and ga else "—"
    print(f"  {label:34} {o:>12} {g:>12} {ratio:>8}  {note}".rstrip())


def header(title: str) -> None:
    print(f"\n{title}\n  {'':34} {'ours':>12} {'GA':>12} {'ours/GA':>8}")


def stats(label: str, ours: list[float], ga: list[float], note: str = "") -> None:
    row(f"{label}: median", statistics.median(ours), statistics.median(ga), note=note)
    row(f"{label}: p99", percentile(ours, 99), percentile(ga, 99))


@contextmanager
def sampling_rss(pid: int, every: float = 0.02) -> Iterator[list[float]]:
    """Sample jctotpd's VmRSS in a thread while the block runs."""
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(memory_mb(pid)["VmRSS"])
            stop.wait(every)

    t = threading.Thread(target=sample)
    t.start()
    try:
        yield samples
    finally:
        stop.set()
        t.join()


# --- the phases ------------------------------------------------------------------------


def latency_phases(args: argparse.Namespace, ga_so: str, tmp: Path) -> None:
    confdir = tmp / "pam.d"
    confdir.mkdir()
    ga_users = GaUsers(tmp / "ga-secrets")
    with private_daemon(fail_delay=args.fail_delay, log_level="error") as daemon:
        count = [0]

        def our_user() -> tuple[str, pyotp.TOTP]:
            count[0] += 1
            name = f"jc{count[0]}"
            data = daemon.ok("user.add", name=name, mfa=True, system_account=False)
            return name, totp_of(data["otpauth_uri"])

        shim = f"{pd.SHIM} socket={daemon.pam_socket} timeout=10"
        pd.write_service(confdir, "jc-auth", [f"auth required {shim} factors=totp"])
        pd.write_service(confdir, "jc-both", [f"auth required {shim} factors=totp",
                                              f"account required {shim}"])
        pd.write_service(confdir, "ga-auth", [f"auth required {ga_so} {ga_users.options}"])
        pd.write_service(confdir, "ga-both", [f"auth required {ga_so} {ga_users.options}",
                                              "account required pam_permit.so"])
        ours = Side("jc-auth", our_user)
        ga = Side("ga-auth", ga_users.add)

        print(f"{args.logins} logins each, interleaved, one fresh user per login "
              f"(made {args.make_users}), after {args.warmup} warm-up; wall time from "
              "pam_start_confdir to pam_end")
        header("One TOTP step (ours factors=totp; GA default module options)")
        o, g = interleaved(confdir, ours, ga, args.logins, args.warmup)
        stats("auth only", o, g)
        right_ours, right_ga = o, g
        o, g = interleaved(confdir, Side("jc-both", our_user, "both"),
                           Side("ga-both", ga_users.add, "both"), args.logins, args.warmup)
        stats("auth + account", o, g, note="(GA: account = pam_permit)")

        # What the protocol costs without the daemon's work: the shim against
        # a do-nothing asyncio server, and the driver against pam_permit.
        pd.write_service(confdir, "permit", ["auth required pam_permit.so"])
        with floor_daemon(tmp) as floor_socket:
            pd.write_service(confdir, "floor", [f"auth required {pd.SHIM} socket={floor_socket} "
                                                "timeout=10 factors=totp"])
            floor = Side("floor", lambda: ("floor", pyotp.TOTP(pyotp.random_base32())))
            permit = Side("permit", lambda: ("nobody", pyotp.TOTP(pyotp.random_base32())))
            f, pm = interleaved(confdir, floor, permit, args.logins, args.warmup)
        row("floor: shim + empty asyncio server", statistics.median(f), None,
            note=f"(p99 {us(percentile(f, 99))}; 2 round trips, no work)")
        row("floor: driver + pam_permit", statistics.median(pm), None,
            note=f"(p99 {us(percentile(pm, 99))})")

        # The fail delay is a sleep: run the wrong codes a few at a time so the
        # run does not take logins x fail_delay; the excess over the delay is work.
        wrong_ours = parallel_wrong_logins(confdir, ours, args.logins, args.wrong_procs,
                                           args.fail_delay)
        excess = [t - args.fail_delay for t in wrong_ours]
        wrong_ga = [ga.login(confdir, wrong=True)[0] for _ in range(args.logins)]
        header(f"A wrong code (ours: minus fail_delay {args.fail_delay:g} s; "
               f"{args.wrong_procs} logins at a time, their starts spread)")
        stats("wrong code", excess, wrong_ga)
        row("wrong − right code: median", statistics.median(excess) - statistics.median(right_ours),
            statistics.median(wrong_ga) - statistics.median(right_ga),
            note="(target: ours ≤ 0 beyond fail_delay)")


def throughput_phases(args: argparse.Namespace, ga_so: str, tmp: Path) -> list[str]:
    """Prints the throughput figures; returns the profile summary's lines (if asked)."""
    confdir = tmp / "pam.d-rate"
    confdir.mkdir()
    # No RATE_LIMIT here: with it GA refuses a user's 4th login in 30 s
    # without checking the code, which would not be a verification.
    ga_users = GaUsers(tmp / "ga-rate", rate_limit=False)
    ga_pool = [(name, totp.secret) for name, totp in (ga_users.add() for _ in range(args.users))]
    with private_daemon(fail_delay=0, max_attempts=100, fail_interval=1,
                        log_level="error") as daemon:
        pid = daemon.proc.pid
        mem_start = memory_mb(pid)
        ours_pool = []
        for i in range(args.users):
            data = daemon.ok("user.add", name=f"rate{i}", mfa=True, system_account=False)
            ours_pool.append((f"rate{i}", data["otpauth_uri"]))
        shim = f"{pd.SHIM} socket={daemon.pam_socket} timeout=10"
        pd.write_service(confdir, "jc-rate", [f"auth required {shim} factors=totp"])
        pd.write_service(confdir, "ga-rate", [f"auth required {ga_so} {ga_users.options}"])

        header(f"Throughput: wrong codes, {args.connections} concurrent logins, "
               f"{args.seconds:g} s (fail_delay 0)")
        secrets = [(n, pyotp.parse_uri(uri).secret) for n, uri in ours_pool]
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        counts_o, lat_o = driver_rate(confdir, "jc-rate", secrets, args.connections, 2,
                                      args.seconds, args.rate_warmup)
        cores_drv = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        counts_g, lat_g = driver_rate(confdir, "ga-rate", ga_pool, args.connections, 2,
                                      args.seconds, args.rate_warmup)
        for label, counts in (("ours", counts_o), ("GA", counts_g)):
            other = {k: v for k, v in counts.items() if k != "PAM_AUTH_ERR"}
            if other:
                sys.exit(f"compare_ga: {label} throughput: unexpected verdicts {other}")
        row("through libpam: verifications/s", counts_o["PAM_AUTH_ERR"] / args.seconds,
            counts_g["PAM_AUTH_ERR"] / args.seconds, fmt=lambda v: f"{v:.0f}/s",
            note=f"(2 driver processes; jctotpd used {cores_drv:.2f} cores)")
        row("through libpam: p99", percentile(lat_o, 99), percentile(lat_g, 99))

        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        counts, lat = raw_client_measure([daemon.pam_socket], ours_pool, "wrong", args.connections,
                                         2, args.seconds, args.rate_warmup)
        cores_raw = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        verified = counts["SUCCESS"] + counts["AUTH_ERR"]
        row("daemon alone (raw client): /s", verified / args.seconds, None,
            fmt=lambda v: f"{v:.0f}/s", note=f"(jctotpd used {cores_raw:.2f} cores: "
                                             f"{verified / args.seconds / max(cores_raw, 0.01):.0f}"
                                             "/s per core; target ≥ 3000/s)")
        row("daemon alone (raw client): p99", percentile(lat, 99), None,
            note="(a closed loop: its mean is connections / rate)")
        # The target's honest form: logins arriving at a fixed rate, at most
        # --connections in flight, latency from each one's scheduled start.
        run = measure_open([daemon.pam_socket], ours_pool, "wrong", args.open_rate,
                           args.connections, 2, args.seconds, args.rate_warmup, pid)
        row(f"open loop {args.open_rate:g}/s offered: /s", run["verified_per_s"], None,
            fmt=lambda v: f"{v:.0f}/s", note=f"(shed {run['verdicts']['shed']}; jctotpd used "
                                             f"{run['cores']:.2f} cores, the {run['client']} "
                                             f"client {run['client_cores']:.2f}; "
                                             "target ≥ 3000/s)")
        row(f"open loop {args.open_rate:g}/s offered: p99", percentile(run["latencies"], 99),
            None, note="(from the scheduled start; target < 5 ms)")
        mem_load = memory_mb(pid)
        profiled = profile(args, daemon.pam_socket, ours_pool, pid) if args.profile else []
    if args.pam_processes > 1:
        open_loop_processes(args)

    print("\nMemory of jctotpd (GA has none: it runs inside the PAM process)")
    print(f"  TOTP load daemon: VmRSS {mem_start['VmRSS']:.1f} MB at start, "
          f"{mem_load['VmRSS']:.1f} MB after the load (VmHWM {mem_load['VmHWM']:.1f} MB)")
    return profiled


def open_loop_processes(args: argparse.Namespace) -> None:
    """The open-loop rows again with `pam_processes` (a daemon of its own)."""
    n = args.pam_processes
    with private_daemon(fail_delay=0, max_attempts=100, fail_interval=1, log_level="error",
                        pam_processes=n) as daemon:
        wait_serving(daemon, n)
        users = add_users(daemon, args.users)
        run = measure_open([daemon.pam_socket], users, "wrong", args.open_rate,
                           args.connections, 2, args.seconds, args.rate_warmup, daemon.proc.pid)
    row(f"pam_processes {n}, {args.open_rate:g}/s offered: /s", run["verified_per_s"], None,
        fmt=lambda v: f"{v:.0f}/s", note=f"(shed {run['verdicts']['shed']}; jctotpd's {n} "
                                         f"processes used {run['cores']:.2f} cores, the "
                                         f"{run['client']} client {run['client_cores']:.2f}; "
                                         "target ≥ 3000/s)")
    row(f"pam_processes {n}, {args.open_rate:g}/s offered: p99",
        percentile(run["latencies"], 99), None, note="(from the scheduled start; target < 5 ms)")


def memory_storm(args: argparse.Namespace, tmp: Path) -> None:
    """Idle RSS, the peak during `storm` concurrent argon2 password logins, and after."""
    confdir = tmp / "pam.d-storm"
    confdir.mkdir()
    with private_daemon(fail_delay=0, log_level="error") as daemon:
        pid = daemon.proc.pid
        time.sleep(1.0)
        idle = memory_mb(pid)
        users = []
        for i in range(args.storm):
            data = daemon.ok("user.add", name=f"storm{i}", password=PASSWORD, mfa=True,
                             system_account=False)
            users.append((f"storm{i}", totp_of(data["otpauth_uri"])))
        pd.write_service(confdir, "jc-pw", [f"auth required {pd.SHIM} "
                                            f"socket={daemon.pam_socket} timeout=30"])
        time.sleep(1.0)
        after_add = memory_mb(pid)

        def login(k: int) -> int:
            name, totp = users[k % len(users)]
            return pd.run(confdir, "jc-pw", name, [PASSWORD, wrong_code(totp)]).rc

        with sampling_rss(pid) as samples, ThreadPoolExecutor(args.storm) as pool:
            rcs = Counter(pd.pam_strerror(rc)
                          for rc in pool.map(login, range(args.storm * args.storm_rounds)))
        peak = memory_mb(pid)
        time.sleep(args.settle)
        after = memory_mb(pid)
    print(f"  idle (1 s after start):        VmRSS {idle['VmRSS']:6.1f} MB  (target ≤ 40 MB)")
    print(f"  after adding {args.storm} password users: VmRSS {after_add['VmRSS']:6.1f} MB")
    print(f"  storm, {args.storm} concurrent argon2 password logins x {args.storm_rounds}: "
          f"peak VmRSS {max(samples):.1f} MB (sampled), VmHWM {peak['VmHWM']:.1f} MB; "
          f"verdicts {dict(rcs)}")
    print(f"  {args.settle:g} s after the storm:          VmRSS {after['VmRSS']:6.1f} MB")


def profile(args: argparse.Namespace, socket: str, pool: list[tuple[str, str]],
            pid: int) -> list[str]:
    """py-spy the daemon under the raw-client TOTP load; the top self-time frames."""
    import json

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        return ["\n(profile: py-spy not found; pip install py-spy)"]
    seconds = max(5.0, args.seconds)
    rec = subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                            "--rate", "250", "--format", "speedscope", "--output", args.profile,
                            "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    raw_client_measure([socket], pool, "wrong", args.connections, 2, seconds, 0.5)
    rec.wait(30)
    data = json.loads(Path(args.profile).read_text())
    frames = data["shared"]["frames"]

    def function(i: int) -> str:  # py-spy's frames are per line: group them by function
        f = frames[i]
        return f"{f['name']} ({Path(f.get('file', '?')).name})"

    self_time: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0.0
    unit = data["profiles"][0].get("unit", "samples") if data["profiles"] else "samples"
    for prof in data["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"], strict=True):
            if not stack:
                continue
            total += weight
            self_time[function(stack[-1])] += weight
            ours = {function(i) for i in stack if "pam_jctotp" in frames[i].get("file", "")}
            for name in ours:
                inclusive[name] += weight
    lines = [f"\nProfile of jctotpd under the raw-client load (py-spy, {args.profile}): "
             f"{total:.1f} {unit} sampled, all threads", "  self time:"]
    lines += [f"  {100 * weight / total:5.1f}%  {name}"
              for name, weight in self_time.most_common(args.profile_top)]
    lines.append("  inclusive time, pam_jctotp functions:")
    lines += [f"  {100 * weight / total:5.1f}%  {name}"
              for name, weight in inclusive.most_common(args.profile_top)]
    return lines


def ssh_phase(args: argparse.Namespace) -> None:
    """bench/ssh_login.py --classic: ours against pam_unix + GA over real SSH, the
    classic hash at --yescrypt-cost (GA's column) and at Debian 12's default."""
    import ssh_login  # pexpect and docker: only for --ssh

    costs = sorted({args.yescrypt_cost, ssh_login.DEBIAN_DEFAULT_COST})
    stacks, hashes = ssh_login.run(args.ssh_logins, 1, costs)
    ours = stacks[0].times
    by_cost = {int(s.label.removeprefix("classic y")): s.times for s in stacks[1:]}
    ga = by_cost[args.yescrypt_cost]
    header(f"Whole SSH login (password + code), {args.ssh_logins} logins each, interleaved; "
           f"GA = pam_unix (yescrypt cost {args.yescrypt_cost}) + GA")
    print("\n".join("  " + line for line in hashes))
    row("ssh login: median", statistics.median(ours["total"]), statistics.median(ga["total"]),
        fmt=ms)
    row("ssh login: p95", percentile(ours["total"], 95), percentile(ga["total"], 95), fmt=ms)
    for phase in ssh_login.PHASES[1:]:
        row(f"  {phase}: median", statistics.median(ours[phase]), statistics.median(ga[phase]),
            fmt=ms)
    if args.yescrypt_cost != ssh_login.DEBIAN_DEFAULT_COST:
        debian = by_cost[ssh_login.DEBIAN_DEFAULT_COST]["total"]
        row("ssh login: median, GA at cost 5", statistics.median(ours["total"]),
            statistics.median(debian), fmt=ms,
            note="(Debian 12's default yescrypt: cheaper to attack than ours)")
    print(f"  {ssh_login.SPLIT_NOTE}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logins", type=int, default=300, help="timed logins per module and figure")
    ap.add_argument("--warmup", type=int, default=5, help="untimed logins first")
    ap.add_argument("--fail-delay", type=float, default=2.0,
                    help="jctotpd's fail_delay for the latency figures (its default: 2 s)")
    ap.add_argument("--wrong-procs", type=int, default=10,
                    help="our wrong-code logins run this many at a time (the delay is a sleep)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=5.0, help="per throughput measurement")
    ap.add_argument("--rate-warmup", type=float, default=1.0)
    ap.add_argument("--pam-processes", type=int, default=2,
                    help="the open-loop rows again with jctotpd's pam_processes at this "
                         "(1: not again)")
    ap.add_argument("--open-rate", type=float, default=3000.0,
                    help="logins/s offered in the open-loop throughput row (bench/verify_rate.py)")
    ap.add_argument("--users", type=int, default=200, help="users of the throughput phase")
    ap.add_argument("--storm", type=int, default=50, help="concurrent argon2 password logins")
    ap.add_argument("--storm-rounds", type=int, default=4)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds before the 'after' RSS")
    ap.add_argument("--tmpdir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where GA's secret files and jctotpd's state live (default /dev/shm: "
                         "tmpfs, so GA's fsync per login and SQLite cost CPU, not the disk)")
    ap.add_argument("--profile", metavar="OUT.json",
                    help="also py-spy the daemon under the throughput load (speedscope file)")
    ap.add_argument("--profile-top", type=int, default=15)
    ap.add_argument("--make-users", choices=["ahead", "inline"], default="ahead",
                    help="make the fresh users before the timed logins (default) or each "
                         "right before its login (how the Before figures were taken)")
    ap.add_argument("--only", choices=["latency", "throughput", "memory", "ssh"], action="append",
                    help="run only this part (repeatable); default: the first three, and ssh "
                         "with --ssh")
    ap.add_argument("--ssh", action="store_true",
                    help="also the whole SSH login against pam_unix + GA (needs Docker; "
                         "bench/ssh_login.py --classic)")
    ap.add_argument("--ssh-logins", type=int, default=30, help="SSH logins per stack")
    ap.add_argument("--yescrypt-cost", type=int, default=6,
                    help="the pam_unix users' yescrypt cost for --ssh (default 6: the smallest "
                         "no cheaper to attack than argon2id at OWASP's minimum)")
    ap.add_argument("--quick", action="store_true",
                    help="a smaller run: 60 logins, 2 s phases, a storm of 20, 10 SSH logins")
    args = ap.parse_args()
    if args.quick:
        args.logins, args.warmup, args.seconds, args.storm = 60, 3, 2.0, 20
        args.ssh_logins = 10
        args.storm_rounds, args.settle = 2, 2.0

    global USERS_AHEAD
    USERS_AHEAD = args.make_users == "ahead"
    tempfile.tempdir = args.tmpdir  # private_daemon's temp dirs too
    ga_so = ga_module()
    quiet_console()
    subprocess.run(["make", "-s", "-C", str(REPO / "native"), "all"], check=True)
    print(f"ours: {pd.SHIM}\nGA:   {ga_so}\n{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"temp files in {tempfile.gettempdir()}, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"Python {sys.version.split()[0]} ({sys.executable}) for the driver and jctotpd")
    if os.getloadavg()[0] > 1.0:
        print("note: the machine is busy (load above 1): quote these figures with the load")
    if os.environ.get("JCTOTP_BENCH_NS"):
        print("no /dev/log here: GA's syslog line per login goes to /dev/null "
              "(/dev/console, bound in a private mount namespace)")
    only = set(args.only or ["latency", "throughput", "memory"])
    if args.ssh:
        only.add("ssh")
    tmp = Path(tempfile.mkdtemp(prefix="jctotp-compare-"))
    try:
        profiled: list[str] = []
        if "latency" in only:
            latency_phases(args, ga_so, tmp)
        if "throughput" in only:
            profiled = throughput_phases(args, ga_so, tmp)
        if "memory" in only:
            memory_storm(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if "ssh" in only:
        ssh_phase(args)
    else:
        print("\nWhole SSH login (password + code) vs pam_unix + GA: not run (--ssh)")
    print("\n".join(profiled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
