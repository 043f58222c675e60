"""Wall time of one full SSH login (password + code) with the real OpenSSH
client against the real sshd + pam_jctotp in a container.

    python3 bench/ssh_login.py [-n 20]

One login = spawn `ssh ... true`, answer "Directory password: " and "Verification
code: ", wait for the end of its output: TCP connect, key exchange, both PAM round
trips, the session and its teardown. Each login uses its own enrolled user,
so that no code is refused as a replay. Prints median and p95.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pexpect

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ssh"))

from sshlib import Sshd, build_image  # noqa: E402


def one_login(sshd: Sshd, name: str, password: str, code: str) -> float:
    """Seconds from spawning ssh to its exit (pexpect's close() sleeps, so
    the clock stops at EOF and the exit status is checked after)."""
    start = time.perf_counter()
    child = sshd.ssh(name, "true")
    child.expect_exact("Directory password: ")
    child.sendline(password)
    child.expect_exact("Verification code: ")
    child.sendline(code)
    child.expect(pexpect.EOF)
    took = time.perf_counter() - start
    child.close()
    assert child.exitstatus == 0, child.before
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20, help="logins (default 20)")
    n = ap.parse_args().n
    build_image()
    sshd = Sshd.start("password")
    try:
        users = [(f"bench{i}", sshd.add_user(f"bench{i}", f"bench-pass-{i}")) for i in range(n)]
        sshd.login("bench0", "bench-pass-0", users[0][1].fresh(), command="true")  # warm up
        times = []
        for i, (name, totp) in enumerate(users):
            times.append(one_login(sshd, name, f"bench-pass-{i}", totp.fresh()))
    finally:
        sshd.stop()
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
    figures = {"median": statistics.median(times), "p95": p95, "min": times[0], "max": times[-1]}
    ms = {k: round(v * 1000) for k, v in figures.items()}
    print(f"ssh login (password + code), {n} logins: median {ms['median']} ms, p95 {ms['p95']} ms,"
          f" min {ms['min']} ms, max {ms['max']} ms")


if __name__ == "__main__":
    main()
