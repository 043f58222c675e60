"""Fixtures for the real-libpam tier: the shim is built once per session."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pamdriver  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def shim() -> str:
    """Build native/ (a failure fails the run) and return the shim's path."""
    target = "asan" if os.environ.get("JCTOTP_SHIM", "").endswith("/asan/pam_jctotp.so") else "all"
    native = pamdriver.REPO / "native"
    # pytest-xdist: every worker builds; one at a time, so none loads a half-written .so.
    lock = os.open(native, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["make", "-s", "-C", str(native), target], check=True)
    finally:
        os.close(lock)
    assert Path(pamdriver.SHIM).is_file(), pamdriver.SHIM
    return pamdriver.SHIM


@pytest.fixture
def confdir(tmp_path: Path) -> str:
    """A directory for PAM service files (pam_start_confdir)."""
    d = tmp_path / "pam.d"
    d.mkdir()
    return str(d)
