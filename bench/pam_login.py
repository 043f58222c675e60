#!/usr/bin/env python3
"""Wall time of one password + code login through the real PAM stack.

libpam (driven by tests/pam/pamdriver.py) loads the built native/pam_jctotp.so,
which talks to a private jctotpd; each login answers the password and the
code of the current time-step. Between logins (outside the timed part) the
daemon's test clock moves 30 s on, so every login has a fresh step and the
replay guard never refuses. The password check is argon2id with the default
(OWASP minimum) parameters: the one deliberate cost of a login.

    python3 bench/pam_login.py [--logins 100]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pamdriver as pd
from benchlib import REPO, describe, private_daemon  # first: puts tests/ on sys.path
from testlib import code_at

PASSWORD = "correct horse battery"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logins", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3, help="untimed logins first")
    args = parser.parse_args()

    subprocess.run(["make", "-s", "-C", str(REPO / "native"), "all"], check=True)
    with private_daemon(fail_delay=2.0) as daemon:
        totp = daemon.add_user("alice", PASSWORD)
        confdir = Path(daemon.dir) / "pam.d"
        confdir.mkdir()
        opts = f"socket={daemon.pam_socket} timeout=5"
        pd.write_service(confdir, "bench", [f"auth required {pd.SHIM} {opts}"])

        times: list[float] = []
        for i in range(args.warmup + args.logins):
            offset = 30.0 * (i + 1)
            daemon.set_clock(offset)
            code = code_at(totp, offset)
            start = time.perf_counter()
            result = pd.run(confdir, "bench", "alice", [PASSWORD, code])
            elapsed = time.perf_counter() - start
            if result.rc != pd.PAM_SUCCESS:
                print(f"login {i} failed: {result.name} {result.transcript}", file=sys.stderr)
                return 1
            if i >= args.warmup:
                times.append(elapsed)

    print(f"password + code logins through the real PAM stack: {len(times)} "
          f"(after {args.warmup} warm-up), all PAM_SUCCESS")
    print(f"wall time per login: {describe(times)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
