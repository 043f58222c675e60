"""Issue 12 bug 7: the daemon started through its entry point (pyproject's
console script `jctotpd`, as pip installs it) is a process named jctotpd, so
`pgrep -x jctotpd` finds it (the .deb's #!/usr/bin/python3 script is tested
in tests/packaging)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from testlib import daemon_config

from pam_jctotp.cli import client

pytestmark = pytest.mark.pam


def test_pyproject_declares_the_entry_points():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'jctotpd = "pam_jctotp.daemon:main"' in text
    assert 'jctotp = "pam_jctotp.cli.main:main"' in text


def test_the_entry_point_runs_as_a_process_named_jctotpd(tmp_path):
    script = Path(sys.executable).parent / "jctotpd"
    if not script.exists():
        pytest.skip("jctotpd is not installed in this environment (pip install -e .)")
    os.chmod(tmp_path, 0o755)
    config = daemon_config(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    # The daemon's log to a file (a pipe nobody reads would fill and stall it);
    # no sanitizer runtimes (scripts/test-asan.sh instruments only the shim).
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}
    log = tmp_path / "jctotpd.log"
    with open(log, "ab") as err:   # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([str(script), "--config", str(tmp_path / "config.yaml")],
                                stdout=subprocess.DEVNULL, stderr=err,
                                env=dict(env, JCTOTPD_TESTING="1"))
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            try:
                client.request(config["control_socket"], "user.list")
                break
            except Exception:
                time.sleep(0.05)
        assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "jctotpd"
        if shutil.which("pgrep"):
            found = subprocess.run(["pgrep", "-x", "jctotpd"], capture_output=True, text=True,
                                   env=env, timeout=30)
            assert str(proc.pid) in found.stdout.split()
    finally:
        proc.terminate()
        proc.wait(10)
