"""`jctotp doctor`, the clock: TOTP codes are checked against it, so it must be
synchronized (NTP)."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

from .host import Finding, Host

STA_UNSYNC = 0x0040


def _adjtimex() -> str:
    """The kernel's own flag (set by chrony, ntpd, systemd-timesyncd): adjtimex(2)
    with modes=0 reads without changing anything."""
    if ctypes.sizeof(ctypes.c_long) != 8:
        return "unknown"  # the offsets below are LP64's
    buf = ctypes.create_string_buffer(512)  # struct timex (208 bytes), zeroed: modes=0
    state = ctypes.CDLL(None, use_errno=True).adjtimex(buf)
    if state < 0:
        return "unknown"
    # modes (int, padded to 8), offset, freq, maxerror, esterror (longs), status (int)
    status = int.from_bytes(buf.raw[40:44], "little", signed=True)
    if state == 5 or status & STA_UNSYNC:  # TIME_ERROR, or no NTP daemon keeps it
        return "no"
    return "yes"


def clock_sync() -> tuple[str, str]:
    """("yes" | "no" | "unknown", how it was found). Never a guess."""
    if shutil.which("timedatectl"):
        proc = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                              capture_output=True, text=True, timeout=10)
        if proc.returncode == 0 and proc.stdout.strip() in ("yes", "no"):
            return proc.stdout.strip(), "timedatectl"
    if shutil.which("chronyc"):
        proc = subprocess.run(["chronyc", "-n", "tracking"], capture_output=True, text=True,
                              timeout=10)
        if proc.returncode == 0 and "Leap status" in proc.stdout:
            synced = re.search(r"Leap status\s*:\s*Normal", proc.stdout) is not None
            return ("yes" if synced else "no"), "chronyc tracking"
    try:
        return _adjtimex(), "adjtimex(2)"
    except (OSError, AttributeError):
        return "unknown", "no timedatectl, chronyc or adjtimex"


def clock_findings(host: Host, fleet: bool = False) -> list[Finding]:
    """`fleet`: the fleet database's clock checks codes (store/pg_codecheck.py), and
    the daemon's own finding compares this clock with it."""
    if host.clock is None:
        return []
    state, how = host.clock()
    if state == "yes":
        return [Finding("ok", f"clock: synchronized ({how})")]
    if state == "no":
        # The kernel's flag says "no NTP daemon disciplines it", not "wrong": a warning.
        level = "warn" if how.startswith("adjtimex") else "fail"
        used = ("the fleet's database server's clock is the authority for codes and "
                "locks; this one stamps the audit and checks break-glass logins in an "
                "outage" if fleet else "TOTP codes are checked against this clock, so a drifting "
                "one refuses everyone")
        return [Finding(level, f"clock: NOT synchronized ({how}): {used}; enable "
                        "NTP (timedatectl set-ntp true, or chrony)")]
    return [Finding("warn", f"clock: synchronization unknown ({how}); check that NTP runs")]
