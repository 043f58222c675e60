"""Fixtures of the SSH tier: the image (built once), containers per module.

Needs a Docker engine (scripts/ensure-docker.sh). Without one the tier is
skipped on a developer's machine and fails under CI (CI=true).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sshlib import Sshd, build_image  # noqa: E402


def pytest_collection_modifyitems(items):
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def image() -> None:
    engine = subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    if not engine and os.environ.get("CI") != "true":
        pytest.skip("no Docker engine (run scripts/ensure-docker.sh)")
    build_image()


@pytest.fixture(scope="session")
def sshd(image) -> Sshd:
    """Password + code, shared by the modules that only add their own users."""
    s = Sshd.start("password")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def fresh_sshd(image):
    """Containers of this module only (modes, daemon restarts); removed after."""
    started: list[Sshd] = []

    def start(mode: str = "password", **config) -> Sshd:
        s = Sshd.start(mode, **config)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the container's sshd and jctotpd logs to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name in ("sshd", "fresh_sshd"):
            s = item.funcargs.get(name)
            if isinstance(s, Sshd):
                report.sections.append((f"{name} logs", s.logs()[-6000:]))
