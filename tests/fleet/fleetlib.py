"""Helpers of the fleet tests (a module, not conftest: tests/unit has a conftest too)."""

from __future__ import annotations

from pathlib import Path

import pamdriver

from testlib import Daemon

PREFIX = "jcfl"   # Linux accounts and groups the tests make (the scratch_accounts fixture)


def service(confdir: str, host: Daemon, name: str = "jctotp-fleet", timeout: int = 10,
            extra: str = "") -> str:
    """A PAM service file for one host's socket (auth + account); `extra`: more options."""
    opts = f"socket={host.pam_socket} timeout={timeout} {extra}".strip()
    svc = f"{name}-{Path(host.dir).name}"
    pamdriver.write_service(confdir, svc, [f"auth required {pamdriver.SHIM} {opts}",
                                           f"account required {pamdriver.SHIM} {opts}"])
    return svc
