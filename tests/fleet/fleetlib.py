"""Helpers of the fleet tests (a module, not conftest: tests/unit has a conftest too)."""

from __future__ import annotations

from pathlib import Path

import pamdriver

from testlib import Daemon


def service(confdir: str, host: Daemon, name: str = "jctotp-fleet", timeout: int = 10) -> str:
    """A PAM service file for one host's socket (auth + account)."""
    return pamdriver.service(confdir, host, name=f"{name}-{Path(host.dir).name}",
                             timeout=timeout)
