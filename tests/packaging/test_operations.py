"""Week-one operations of the installed .deb under a real systemd (issue 12
bugs 3, 5, 9): reload, a broken config on reload and on restart, error lines
at error priority in the journal, and doctor finding the su trap of the
pam-auth-update profile.

The unit file comes from packaging/deb/jctotpd.service. Tests that need a
unit setting say so (xfail, strict) until the unit has it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from debcontainer import Container, main_pid

REPO = Path(__file__).resolve().parents[2]
UNIT = (REPO / "packaging/deb/jctotpd.service").read_text()
UNIT_RELOADS = re.search(r"^ExecReload=", UNIT, re.M) is not None
# "ExecStartPre=/usr/sbin/jctotpd --check" (no "-") refuses the start after
# `systemctl restart` has already stopped the healthy daemon.
BLOCKING_CHECK = re.search(r"^ExecStartPre=/usr/sbin/jctotpd --check", UNIT, re.M) is not None
PASSWORD = "Correct-Horse-7"
CONFIG = "/etc/jctotp/config.yaml"


@pytest.fixture
def host(systemd_container, deb):
    """systemd as PID 1 with the .deb installed and jctotpd active."""
    c = systemd_container
    c.sh(f"apt-get install -y -q --no-install-recommends /pkg/{deb.name}")
    wait_active(c)
    return c


def wait_active(c: Container) -> None:
    c.sh("for i in $(seq 100); do systemctl is-active -q jctotpd && "
         "[ -S /run/jctotp/control.sock ] && exit 0; sleep 0.1; done; "
         "systemctl status jctotpd --no-pager; exit 1")


def set_key(c: Container, line: str) -> None:
    """Set one top-level key of config.yaml (replacing the line if there is one)."""
    key = line.split(":", 1)[0]
    c.sh(f"sed -i '/^{key}:/d' {CONFIG} && echo '{line}' >>{CONFIG}")


def serving(c: Container) -> bool:
    """A real request on the control socket and one on the PAM socket."""
    listed = c.sh("jctotp --json user list", ok=False)
    doctor = c.sh("jctotp --json doctor", ok=False)
    answers = [f for f in json.loads(doctor.stdout or "[]")
               if f["level"] == "ok" and "answers" in f["what"]]
    return listed.returncode == 0 and len(answers) == 2


def journal(c: Container, *args: str) -> str:
    return c.sh("journalctl -u jctotpd --no-pager -o cat " + " ".join(args)).stdout


@pytest.mark.docker
@pytest.mark.xfail(not UNIT_RELOADS, strict=True,
                   reason="needs ExecReload= in the unit (branch packaging)")
def test_systemctl_reload_applies_a_change_and_keeps_the_daemon(host):
    c = host
    pid = main_pid(c)
    set_key(c, "issuer: Reloaded Inc")
    c.sh("systemctl reload jctotpd")
    c.sh("for i in $(seq 50); do journalctl -u jctotpd -o cat | grep -q '^reloaded ' && "
         "exit 0; sleep 0.1; done; exit 1")
    assert main_pid(c) == pid and serving(c)
    assert "changed: issuer" in journal(c)
    added = json.loads(c.sh("jctotp --json user add bob --password-stdin --mfa "
                            "--no-system-account", stdin=PASSWORD + "\n").stdout)
    assert "issuer=Reloaded%20Inc" in added["otpauth_uri"]


@pytest.mark.docker
def test_a_broken_config_on_sighup_is_one_error_line_and_the_daemon_serves_on(host):
    """Bug 3: kill -HUP killed jctotpd and left stale sockets. Bug 5: the
    journal had every line at info priority (`-p err` showed nothing)."""
    c = host
    pid = main_pid(c)
    assert journal(c, "-p", "err") == ""
    set_key(c, "max_atempts: 3")
    c.sh("systemctl kill --signal=HUP --kill-who=main jctotpd")
    c.sh("for i in $(seq 50); do journalctl -u jctotpd -o cat | grep -q 'reload refused' && "
         "exit 0; sleep 0.1; done; journalctl -u jctotpd --no-pager; exit 1")
    errors = journal(c, "-p", "err").splitlines()
    assert len(errors) == 1, errors
    assert "reload refused, keeping the running config" in errors[0]
    assert "line " in errors[0] and "did you mean 'max_attempts'" in errors[0]
    assert "ready" not in journal(c, "-p", "err") and "ready" in journal(c, "-p", "info")
    assert main_pid(c) == pid and serving(c)
    # `systemctl reload` with the broken file: refused (by the unit's check, or
    # by the daemon), never a stopped daemon.
    c.sh("systemctl reload jctotpd", ok=False)
    assert main_pid(c) == pid and serving(c)
    # The CLI keeps working with the typo in the file: a warning, not exit 78.
    out = c.sh("jctotp user list")
    assert "warning" in out.stderr


@pytest.mark.docker
@pytest.mark.xfail(BLOCKING_CHECK, strict=True,
                   reason="the unit's ExecStartPre=jctotpd --check (without '-') refuses "
                          "the start after `systemctl restart` has stopped the healthy "
                          "daemon; with ExecStartPre=-/usr/sbin/jctotpd --check the errors "
                          "stay in the journal and jctotpd starts with its last good config")
def test_restart_with_a_broken_config_keeps_a_daemon_serving(host):
    c = host
    c.sh("jctotp user add alice --password-stdin --no-system-account", stdin=PASSWORD + "\n")
    set_key(c, "max_atempts: 3")
    c.sh("systemctl restart jctotpd", ok=False)
    wait_active(c)
    assert serving(c)
    assert "alice" in c.sh("jctotp user list").stdout
    errors = journal(c, "-p", "err")
    assert "max_atempts" in errors and "serving with the last good config" in errors


@pytest.mark.docker
def test_doctor_finds_the_su_trap_of_the_profile(host):
    """Bug 9: pam-auth-update --enable jctotp with unknown_users: refuse broke
    su for root while doctor said all was well."""
    c = host
    set_key(c, "unknown_users: refuse")
    c.sh("pam-auth-update --package --enable jctotp")
    out = c.sh("jctotp doctor", ok=False)
    assert out.returncode == 1, out.stdout
    # One line for every service the trap reaches: "PAM services login, ..., su, ...:".
    trap = [line for line in out.stdout.splitlines()
            if line.startswith("FAIL  PAM service") and " su" in line.split(":")[0]]
    assert trap and "/etc/pam.d/common-" in trap[0] and "unknown_users" in trap[0], out.stdout
    set_key(c, "unknown_users: ignore")
    out = c.sh("jctotp doctor", ok=False)
    assert "unknown_users: refuse" not in out.stdout, out.stdout
    assert "ok    PAM socket /run/jctotp/pam.sock answers" in out.stdout
