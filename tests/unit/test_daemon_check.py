"""Issue 21 item 8: `jctotpd --check` means it will start (pam_jctotp/preflight.py).

Each unstartable config fails `--check` with one line naming the fix, and the
daemon itself stops with that line, never a traceback. Unreachable servers are
ports where nothing listens on 127.0.0.1 (9: discard).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from testlib import REPO, daemon_config

NOWHERE_DB = "postgresql://jctotp@127.0.0.1:9/jctotp?connect_timeout=2"


def run(config: Path, *args: str, hide: str | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    """jctotpd with `config`; `hide`: a module made to look uninstalled."""
    env = dict(os.environ, PYTHONPATH=str(REPO), JCTOTPD_TESTING="1")
    if hide is not None:
        shadow = config.parent / "shadow"
        shadow.mkdir(exist_ok=True)
        (shadow / f"{hide}.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{hide}'\", name={hide!r})\n")
        env["PYTHONPATH"] = f"{shadow}:{REPO}"
    return subprocess.run([sys.executable, "-m", "pam_jctotp.daemon", "--config", str(config),
                           *args], capture_output=True, text=True, env=env, timeout=timeout)


def write(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(daemon_config(tmp_path, **overrides)))
    return path


def ldap_block(tmp_path: Path, uri: str = "ldaps://127.0.0.1:9") -> dict:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked before a connection\n")
    pw = tmp_path / "ldap.pw"
    pw.write_text("service password\n")
    pw.chmod(0o600)
    return {"type": "ldap", "uri": [uri], "ca_file": str(ca), "base_dn": "o=x",
            "user_filter": "(uid={user})", "bind_dn": "uid=svc,o=x",
            "bind_password_file": str(pw), "timeout": 1}


def fleet_key(tmp_path: Path) -> Path:
    key = tmp_path / "fleet.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    return key


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr


def test_a_good_config_passes(tmp_path):
    done = run(write(tmp_path), "--check")
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr


def test_a_duplicate_key_fails_the_check_and_the_start(tmp_path):
    path = write(tmp_path)
    path.write_text(path.read_text() + "fail_delay: 3\n")   # daemon_config sets it too
    for args in (("--check",), ()):
        done = run(path, *args)
        assert done.returncode == 78, (args, done.stderr)
        assert "duplicate key 'fail_delay'" in done.stderr
        no_traceback(done)


def test_a_duplicate_key_in_a_sub_mapping_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(daemon_config(tmp_path)) +
                    "password_hash:\n  time_cost: 3\n  time_cost: 4\n")
    done = run(path, "--check")
    assert done.returncode == 78 and "duplicate key 'time_cost'" in done.stderr, done.stderr


def test_ldap_without_ldap3_names_the_package(tmp_path):
    path = write(tmp_path, directory=ldap_block(tmp_path))
    for args in (("--check",), ()):
        done = run(path, *args, hide="ldap3")
        assert done.returncode == 78, (args, done.stderr)
        assert "python3-ldap3" in done.stderr
        no_traceback(done)


def test_a_fleet_without_psycopg_names_the_package(tmp_path):
    path = write(tmp_path, database=NOWHERE_DB, secret_key_file=str(fleet_key(tmp_path)))
    done = run(path, "--check", hide="psycopg")
    assert done.returncode == 78 and "python3-psycopg" in done.stderr, done.stderr
    no_traceback(done)


def test_a_fleet_host_without_its_key_file_fails(tmp_path):
    path = write(tmp_path, database=NOWHERE_DB, secret_key_file=str(tmp_path / "absent.key"))
    done = run(path, "--check")
    assert done.returncode == 78, done.stderr
    assert "absent.key does not exist" in done.stderr
    no_traceback(done)


def test_a_key_file_with_a_bad_mode_fails(tmp_path):
    key = fleet_key(tmp_path)
    key.chmod(0o644)
    done = run(write(tmp_path, secret_key_file=str(key)), "--check")
    assert done.returncode == 78 and "chmod 600" in done.stderr, done.stderr


def test_an_unreachable_database_warns_and_fails_with_strict(tmp_path):
    path = write(tmp_path, database=NOWHERE_DB, secret_key_file=str(fleet_key(tmp_path)))
    done = run(path, "--check")
    assert done.returncode == 0, done.stderr
    assert "warning:" in done.stderr and "does not answer" in done.stderr
    strict = run(path, "--check", "--strict")
    assert strict.returncode == 78 and "error:" in strict.stderr, strict.stderr
    no_traceback(strict)


def test_an_unreachable_directory_warns_and_fails_with_strict(tmp_path):
    path = write(tmp_path, directory=ldap_block(tmp_path))
    done = run(path, "--check")
    assert done.returncode == 0, done.stderr
    assert "warning: directory ldaps://127.0.0.1:9" in done.stderr
    strict = run(path, "--check", "--strict")
    assert strict.returncode == 78 and "error: directory" in strict.stderr, strict.stderr


def test_an_unreadable_bind_password_file_fails(tmp_path):
    block = ldap_block(tmp_path)
    Path(block["bind_password_file"]).chmod(0o644)
    done = run(write(tmp_path, directory=block), "--check")
    assert done.returncode == 78 and "bind_password_file" in done.stderr, done.stderr
