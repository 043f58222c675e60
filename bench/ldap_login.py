#!/usr/bin/env python3
"""Login latency through LDAP next to the local directory's (issue 14).

Two private jctotpd, one checking passwords in its local argon2id table, one
by binds against a private slapd in JumpCloud's layout (tests/servers/slapd.py,
LDAPS on 127.0.0.1 with a test CA). Each runs the same password + code login
through the real libpam and the built shim, 100 times after a warm-up; the
daemon's test clock moves 30 s between logins (outside the timed part) so that
every code is fresh. Prints median and p99 of each.

    python3 bench/ldap_login.py [--logins 100]      # as root; needs slapd (Debian)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pamdriver as pd
import pyotp
from benchlib import REPO, describe, ms, percentile, private_daemon  # puts tests/ on sys.path
from servers.slapd import new_slapd
from testlib import code_at, ldap_directory

LOCAL_PASSWORD = "correct horse battery"


def run(daemon: Any, user: str, password: str, totp: pyotp.TOTP, n: int, warmup: int
        ) -> list[float]:
    confdir = Path(daemon.dir) / "pam.d"
    confdir.mkdir()
    opts = f"socket={daemon.pam_socket} timeout=5"
    pd.write_service(confdir, "bench", [f"auth required {pd.SHIM} {opts}"])
    times: list[float] = []
    for i in range(warmup + n):
        offset = 30.0 * (i + 1)
        daemon.set_clock(offset)
        code = code_at(totp, offset)
        start = time.perf_counter()
        result = pd.run(confdir, "bench", user, [password, code])
        elapsed = time.perf_counter() - start
        if result.rc != pd.PAM_SUCCESS:
            raise SystemExit(f"login {i} failed: {result.name} (see {daemon.log})")
        if i >= warmup:
            times.append(elapsed)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logins", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3, help="untimed logins first")
    args = parser.parse_args()

    subprocess.run(["make", "-s", "-C", str(REPO / "native"), "all"], check=True)
    results: dict[str, list[float]] = {}
    with private_daemon() as daemon:
        totp = daemon.add_user("alice", LOCAL_PASSWORD)
        assert totp
        results["local (argon2id)"] = run(daemon, "alice", LOCAL_PASSWORD, totp,
                                          args.logins, args.warmup)
    slapd = new_slapd()
    try:
        with private_daemon(directory=ldap_directory(slapd)) as daemon:
            data = daemon.ok("user.add", name="alice", mfa=True, system_account=False)
            totp = pyotp.parse_uri(data["otpauth_uri"])
            results["ldap (LDAPS bind)"] = run(daemon, "alice", slapd.passwords["alice"], totp,
                                               args.logins, args.warmup)
    finally:
        slapd.destroy()

    print(f"password + code logins through the real PAM stack, {args.logins} each "
          f"(after {args.warmup} warm-up), all PAM_SUCCESS")
    for name, times in results.items():
        print(f"  {name:<18} {describe(times)}")
    local, ldap = results["local (argon2id)"], results["ldap (LDAPS bind)"]
    print(f"summary: median {ms(statistics.median(ldap))} via LDAP vs "
          f"{ms(statistics.median(local))} local; p99 {ms(percentile(ldap, 99))} vs "
          f"{ms(percentile(local, 99))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
