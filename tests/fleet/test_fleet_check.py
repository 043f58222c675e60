"""Issue 21 item 8: `jctotpd --check` on a fleet host against the real PostgreSQL: a key
file that is not the fleet's fails (the daemon would refuse every login); the right
one passes without a warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from testlib import REPO

pytestmark = pytest.mark.fleet


def check(host, *args: str) -> subprocess.CompletedProcess[str]:
    host.write_config()
    return subprocess.run([sys.executable, "-m", "pam_jctotp.daemon", "--config",
                           str(host.config_path), "--check", *args], capture_output=True,
                          text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO), JCTOTPD_TESTING="1"))


def test_check_passes_with_the_fleet_key_and_fails_with_another(make_host):
    host = make_host("a", start=False)
    done = check(host, "--strict")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    key = Path(host.config["secret_key_file"])
    key.write_bytes(os.urandom(32))   # another fleet's key, or a fresh one
    done = check(host)
    assert done.returncode == 78, done.stderr
    assert "key check mismatch" in done.stderr and "Traceback" not in done.stderr
