#!/usr/bin/env python3
"""The User Portal's sign-in (password, then code) next to a PAM login, and the
resident memory of jctotp-portal next to jctotpd's (issue 23).

A private jctotpd and a real `jctotp-portal` process on 127.0.0.1; each timed
sign-in is a browser's three requests: GET /signin, POST /signin (password),
POST /code (the code of a fresh time-step; the daemon's test clock moves 30 s
between sign-ins, outside the timed part). The same number of password + code
logins then go through the real libpam and the shim, as bench/pam_login.py.

    python3 bench/portal_signin.py [--signins 50]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchlib import REPO, describe, private_daemon  # first: puts tests/ on sys.path

sys.path.insert(0, str(REPO / "tests" / "portal"))

import pamdriver as pd  # noqa: E402
from portallib import Browser  # noqa: E402
from testlib import code_at  # noqa: E402

PASSWORD = "correct horse battery"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signins", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    subprocess.run(["make", "-s", "-C", str(REPO / "native"), "all"], check=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with private_daemon(fail_delay=2.0, portal={"listen": f"127.0.0.1:{port}",
                                                "public_url": url,
                                                "signins_per_minute": 1000}) as daemon:
        totp = daemon.add_user("alice", PASSWORD)
        portal = subprocess.Popen([sys.executable, "-m", "pam_jctotp.portal.app", "--config",
                                   str(daemon.config_path)], stderr=subprocess.DEVNULL,
                                  env=dict(os.environ, PYTHONPATH=str(REPO)))
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            idle = rss_mb(portal.pid), rss_mb(daemon.proc.pid)
            web: list[float] = []
            offset = 0.0
            for i in range(args.warmup + args.signins):
                offset += 30
                daemon.set_clock(offset)
                code = code_at(totp, offset)
                b = Browser(url)
                start = time.perf_counter()
                b.get("/signin")
                b.post("/signin", {"name": "alice", "password": PASSWORD})
                page = b.post("/code", {"code": code})
                elapsed = time.perf_counter() - start
                if 'id="user-name">alice<' not in page.text:
                    print(f"sign-in {i} failed: {page.url}", file=sys.stderr)
                    return 1
                if i >= args.warmup:
                    web.append(elapsed)
            busy = rss_mb(portal.pid), rss_mb(daemon.proc.pid)

            confdir = Path(daemon.dir) / "pam.d"
            confdir.mkdir()
            pd.write_service(confdir, "bench", [f"auth required {pd.SHIM} "
                                                f"socket={daemon.pam_socket} timeout=5"])
            pam: list[float] = []
            for i in range(args.warmup + args.signins):
                offset += 30
                daemon.set_clock(offset)
                code = code_at(totp, offset)
                start = time.perf_counter()
                r = pd.run(confdir, "bench", "alice", [PASSWORD, code])
                elapsed = time.perf_counter() - start
                if r.rc != pd.PAM_SUCCESS:
                    print(f"PAM login {i} failed: {r.name}", file=sys.stderr)
                    return 1
                if i >= args.warmup:
                    pam.append(elapsed)
        finally:
            portal.terminate()
            portal.wait(10)
    print(f"portal sign-in (GET /signin, POST password, POST code), {len(web)}: "
          f"{describe(web)}")
    print(f"PAM login (password + code through libpam and the shim), {len(pam)}: "
          f"{describe(pam)}")
    print(f"VmRSS idle: jctotp-portal {idle[0]:.1f} MB, jctotpd {idle[1]:.1f} MB; "
          f"after the sign-ins: jctotp-portal {busy[0]:.1f} MB, jctotpd {busy[1]:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
