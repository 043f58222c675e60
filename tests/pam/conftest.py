"""Fixtures for the real-libpam tier: the shim is built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pamdriver  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def shim() -> str:
    """Build native/ and return the shim's path (the ASan build under scripts/test-asan.sh)."""
    asan = os.environ.get("JCTOTP_SHIM", "").endswith("/asan/pam_jctotp.so")
    path = pamdriver.build_shim("asan" if asan else "all")
    assert Path(path).is_file(), path
    return path
