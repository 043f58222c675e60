"""bench/loadgen.c from Python: build it, write the users and codes it answers, run it.

The C client only speaks the protocol; which code each user answers is decided
here, from each user's secret and the clock (pyotp): one column of codes per
time-step from the current one on, enough for the whole run, and the client
picks the column by wall clock when a login starts. "wrong" codes are
well-formed codes outside the daemon's ±1-step window of that step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pyotp

SOURCE = Path(__file__).with_name("loadgen.c")
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]


def available() -> bool:
    """A C compiler to build the client with."""
    return shutil.which("cc") is not None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jctotp-bench"


def binary() -> Path:
    """The built client, compiled once per version of loadgen.c (keyed by its hash)."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(CFLAGS).encode()).hexdigest()[:16]
    for folder in (cache_dir(), Path(tempfile.gettempdir()) / f"jctotp-bench-{os.getuid()}"):
        target = folder / f"loadgen-{digest}"
        if target.exists():
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue   # e.g. a read-only home: the temp dir then
        partial = folder / f".loadgen-{digest}.{os.getpid()}"
        subprocess.run(["cc", *CFLAGS, "-o", str(partial), str(SOURCE)], check=True)
        os.replace(partial, target)   # atomic: a concurrent build wins or loses whole
        return target
    raise OSError(f"no writable directory to build {SOURCE.name} in")


def wrong_code_at(totp: pyotp.TOTP, when: float) -> str:
    """A code the daemon refuses at `when`: none of the codes within two steps of it."""
    window = {totp.at(when + d * totp.interval) for d in (-2, -1, 0, 1, 2)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in window)


def totp_of(uri: str) -> pyotp.TOTP:
    otp = pyotp.parse_uri(uri)
    if not isinstance(otp, pyotp.TOTP):
        raise ValueError("not a TOTP otpauth URI")
    return otp


def codes_text(users: list[tuple[str, str]], mode: str, span: float,
               now: float | None = None) -> str:
    """The users file of loadgen.c: a header `<unix time column 1 begins> <step>`,
    then `<user> <code> <code> ...`, column c being the code of time-step S + c
    (S the current step), enough columns to last `span` seconds."""
    now = time.time() if now is None else now
    totps = [(name, totp_of(uri)) for name, uri in users]
    steps = {totp.interval for _, totp in totps}
    if len(steps) != 1:
        raise ValueError(f"the users' TOTP periods differ: {sorted(steps)}")
    step = steps.pop()
    first = int(now) // step * step
    columns = [first + c * step for c in range(2 + int(span) // step + 1)]
    lines = [f"{first + step} {step}"]
    for name, totp in totps:
        if mode == "current":
            codes = [totp.at(t) for t in columns]
        else:
            codes = [wrong_code_at(totp, t) for t in columns]
        lines.append(" ".join([name, *codes]))
    return "\n".join(lines) + "\n"


def start(paths: list[str], users: list[tuple[str, str]], mode: str, *, connections: int,
          seconds: float, warmup: float, rate: float | None = None,
          start_at: float | None = None, timeout: float = 10.0) -> subprocess.Popen:
    """Start a run (closed loop, or open loop at `rate`) beginning at `start_at`
    (time.monotonic(): the same CLOCK_MONOTONIC as the client's), or at once."""
    cmd = [str(binary())]
    for path in paths:
        cmd += ["--socket", path]
    cmd += ["--users", "-", "--connections", str(connections), "--seconds", repr(seconds),
            "--warmup", repr(warmup), "--timeout", repr(timeout)]
    if rate is not None:
        cmd += ["--rate", repr(rate)]
    if start_at is not None:
        cmd += ["--start-at", repr(start_at)]
    text = codes_text(users, mode, span=warmup + seconds + timeout + 5)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    proc.stdin.write(text)
    proc.stdin.close()
    return proc


def result(proc: subprocess.Popen) -> dict:
    """The run's JSON report (see loadgen.c); latencies_us become `latencies`, in seconds."""
    assert proc.stdout is not None
    out = proc.stdout.read()   # (communicate() would flush the stdin start() closed)
    proc.stdout.close()
    if proc.wait() != 0:
        raise RuntimeError(f"loadgen exited with {proc.returncode}")
    report = json.loads(out)
    report["latencies"] = [us / 1e6 for us in report.pop("latencies_us")]
    return report


def run(paths: list[str], users: list[tuple[str, str]], mode: str, **options) -> dict:
    """start() and result() in one."""
    return result(start(paths, users, mode, **options))
