"""Shared fixtures: a real jctotpd in a temp dir (see testlib.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from testlib import Daemon, daemon_config  # noqa: E402


@pytest.fixture
def make_daemon(tmp_path_factory):
    """Start daemons with config overrides: make_daemon(max_attempts=3)."""
    started: list[Daemon] = []

    def make(**overrides: Any) -> Daemon:
        tmp = tmp_path_factory.mktemp("jctotpd")
        os.chmod(tmp, 0o755)
        d = Daemon(tmp, daemon_config(tmp, **overrides)).start()
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


@pytest.fixture
def daemon(make_daemon) -> Daemon:
    return make_daemon()


@pytest.fixture
def confdir(tmp_path: Path) -> str:
    """A directory for PAM service files (pam_start_confdir)."""
    d = tmp_path / "pam.d"
    d.mkdir()
    return str(d)

