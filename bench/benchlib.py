"""What both benches share: a private jctotpd in a temp dir, and percentiles."""

from __future__ import annotations

import os
import random
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "pam")]

from testlib import Daemon, children, daemon_config  # noqa: E402


@contextmanager
def private_daemon(start: bool = True, **overrides: Any) -> Iterator[Daemon]:
    """A jctotpd with its sockets, state and audit log in a temp dir (removed after);
    `start=False` leaves the starting to the caller."""
    tmp = Path(tempfile.mkdtemp(prefix="jctotp-bench-"))
    config = daemon_config(tmp, **overrides)
    daemon = Daemon(tmp, config)
    try:
        yield daemon.start() if start else daemon
    finally:
        daemon.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(Path(config["control_socket"]).parent, ignore_errors=True)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def describe(values: list[float]) -> str:
    return (f"median {ms(statistics.median(values))}, p99 {ms(percentile(values, 99))}, "
            f"min {ms(min(values))}, max {ms(max(values))}")


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process and its live children (jctotpd's
    `pam_processes`) have used so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) for child in children(pid))


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak so far) of a process, in MB (/proc/PID/status)."""
    found = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return found


def ga_secret_text(secret: str, rate_limit: bool = True) -> str:
    """A google-authenticator secret file as `google-authenticator -t -d -r 3
    -R 30 -w 3` writes it: time-based, no reuse, 3 logins per 30 s, a window
    of 3 codes (= ours, ±1 step), and 5 emergency codes."""
    lines = [secret]
    if rate_limit:
        lines.append('" RATE_LIMIT 3 30')
    lines += ['" WINDOW_SIZE 3', '" DISALLOW_REUSE', '" TOTP_AUTH']
    lines += [f"{random.SystemRandom().randrange(10**7, 10**8)}" for _ in range(5)]
    return "\n".join(lines) + "\n"
