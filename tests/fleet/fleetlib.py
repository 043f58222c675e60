"""Helpers of the fleet tests (a module, not conftest: tests/unit has a conftest too)."""

from __future__ import annotations

from pathlib import Path

import pamdriver
import psycopg
import testlib
from testlib import Daemon

PREFIX = "jcfl"   # Linux accounts and groups the tests make start so (conftest: scratch_accounts)


def service(confdir: str, host: Daemon, name: str = "jctotp-fleet", timeout: int = 10,
            extra: str = "") -> str:
    """A PAM service file for one host's socket (auth + account); `extra`: more options."""
    return pamdriver.service(confdir, host, *extra.split(), name=f"{name}-{Path(host.dir).name}",
                             timeout=timeout)


def eventually(check, timeout: float = 15.0):
    """testlib.eventually with the fleet's longer default wait (syncs, failovers)."""
    return testlib.eventually(check, timeout)


def as_host(host: Daemon) -> psycopg.Connection:
    """Connect with exactly what `fleet host add` gave the host (root on it, stolen)."""
    return psycopg.connect(host.config["database"], autocommit=True)
