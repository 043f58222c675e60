"""Fixtures of the packaging tier: the .deb (built once) and a Docker engine.

Without a Docker engine the container test is skipped on a developer's
machine and fails under CI (CI=true), as in tests/ssh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from debcontainer import Container, boot_systemd

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def deb() -> Path:
    if not shutil.which("dpkg-deb") or not shutil.which("dpkg-architecture"):
        if os.environ.get("CI") == "true":
            pytest.fail("dpkg-dev is needed to build the .deb")
        pytest.skip("dpkg-dev is not installed")
    out = subprocess.run([str(REPO / "packaging/deb/build.sh")], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def docker_engine() -> None:
    engine = bool(shutil.which("docker")) and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0
    if not engine and os.environ.get("CI") != "true":
        pytest.skip("no Docker engine (run scripts/ensure-docker.sh)")
    base = subprocess.run(["docker", "image", "inspect", "debian:bookworm-slim"],
                          capture_output=True).returncode == 0
    if not base:
        pytest.fail("no debian:bookworm-slim image (run scripts/build-base-image.sh)")


@pytest.fixture
def systemd_container(deb, docker_engine, tmp_path) -> Iterator[Container]:
    """A container with systemd as PID 1 (debcontainer.boot_systemd), removed after."""
    c = boot_systemd(deb, tmp_path)
    try:
        yield c
    finally:
        c.remove()
