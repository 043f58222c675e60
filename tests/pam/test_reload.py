"""SIGHUP through the real libpam (issue 12 bug 3): kill -HUP used to kill
jctotpd and leave stale sockets. Now it re-reads config.yaml (validated
first: a broken file is refused with one error line and the running config
kept) and reopens the audit log; the sockets are served throughout."""

from __future__ import annotations

import signal
import time

import pamdriver as pd
import pytest
import yaml
from pamdriver import service
from testlib import code_at

from pam_jctotp import config
from pam_jctotp import daemon as jctotpd

pytestmark = pytest.mark.pam

PASSWORD = "correct horse battery"


def hup(daemon, needle: str, count: int = 1) -> str:
    """Send SIGHUP; wait until the daemon's log has `needle` `count` times."""
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while daemon.log.read_text().count(needle) < count:
        assert daemon.proc.poll() is None, daemon.log.read_text()
        assert time.monotonic() < deadline, daemon.log.read_text()
        time.sleep(0.05)
    return daemon.log.read_text()


def edit(daemon, **changes) -> None:
    daemon.config.update(changes)
    daemon.config_path.write_text(yaml.safe_dump(daemon.config))


def test_a_changed_key_takes_effect_without_a_restart(daemon, confdir):
    daemon.add_user("paula", mfa=False)
    svc = service(confdir, daemon)
    assert pd.run(confdir, svc, "paula", [PASSWORD], call="both").rc == pd.PAM_SUCCESS
    pid = daemon.proc.pid
    edit(daemon, require_mfa_for_all=True, issuer="Reloaded Inc")
    log = hup(daemon, "reloaded ")
    assert "changed: issuer, require_mfa_for_all" in log
    assert daemon.proc.pid == pid and daemon.proc.poll() is None
    assert pd.run(confdir, svc, "paula", [PASSWORD], call="both").rc != pd.PAM_SUCCESS
    totp = daemon.add_user("alice")
    assert totp.issuer == "Reloaded Inc"
    r = pd.run(confdir, svc, "alice", [PASSWORD, code_at(totp)], call="both")
    assert r.rc == pd.PAM_SUCCESS, r


def test_a_broken_file_keeps_the_running_config_and_the_daemon_serving(daemon, confdir):
    totp = daemon.add_user("alice")
    svc = service(confdir, daemon)
    with open(daemon.config_path, "a") as fh:
        fh.write("max_atempts: 3\nfail_delay: -1\n")
    log = hup(daemon, "reload refused")
    refused = [line for line in log.splitlines() if "reload refused" in line]
    assert len(refused) == 1 and "ERROR" in refused[0]
    assert "did you mean 'max_attempts'" in refused[0] and "'fail_delay'" in refused[0]
    assert daemon.proc.poll() is None
    r = pd.run(confdir, svc, "alice", [PASSWORD, code_at(totp)], call="both")
    assert r.rc == pd.PAM_SUCCESS, r
    assert daemon.ok("user.show", name="alice")["max_attempts"] == 5  # the old config


def test_sighup_reopens_the_audit_log(daemon):
    """logrotate renames the file, then signals: new events go to a new file."""
    daemon.add_user("alice", mfa=False)
    rotated = daemon.audit_path.with_name("audit.jsonl.1")
    daemon.audit_path.rename(rotated)
    hup(daemon, "audit log reopened")
    daemon.add_user("bob", mfa=False)
    assert '"bob"' in daemon.audit_path.read_text()
    assert '"bob"' not in rotated.read_text() and '"alice"' in rotated.read_text()


def test_keys_read_at_start_need_a_restart(daemon, confdir):
    totp = daemon.add_user("alice")
    old = daemon.pam_socket
    edit(daemon, pam_socket=old + ".new", max_connections=3)
    log = hup(daemon, "reloaded ")
    assert "pam_socket, max_connections changed; that takes a restart" in log
    daemon.config["pam_socket"] = old
    r = pd.run(confdir, service(confdir, daemon), "alice", [PASSWORD, code_at(totp)],
               call="both")
    assert r.rc == pd.PAM_SUCCESS, r


def test_logins_are_served_while_reloads_come_in(daemon, confdir):
    totp = daemon.add_user("alice")
    svc = service(confdir, daemon)
    for n in range(1, 6):
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.set_clock(30 * n)  # a fresh time-step for each login
        r = pd.run(confdir, svc, "alice", [PASSWORD, code_at(totp, 30 * n)], call="both")
        assert r.rc == pd.PAM_SUCCESS, (n, r)
    assert daemon.proc.poll() is None


def test_a_restart_with_a_broken_file_serves_the_last_good_config(daemon, confdir):
    """`systemctl restart` stops the daemon before anything can check the new
    file: the new process starts with the last config that was good (kept in
    state_dir at every start and reload), says so at error level, and logins
    go on. Before: it exited 78 and every login was refused."""
    totp = daemon.add_user("alice")
    daemon.stop()
    daemon.config["max_atempts"] = 3
    daemon.config["issuer"] = "Never Applied"
    daemon.start()
    log = daemon.log.read_text()
    assert "did you mean 'max_attempts'" in log and "serving with the last good config" in log
    r = pd.run(confdir, service(confdir, daemon), "alice", [PASSWORD, code_at(totp)],
               call="both")
    assert r.rc == pd.PAM_SUCCESS, r
    assert daemon.add_user("bob").issuer != "Never Applied"
    # --check still refuses the file (the unit's check, the admin's test).
    check = daemon.cli("doctor")
    assert "max_atempts" in check.stdout


def test_a_first_start_with_a_broken_file_fails(make_daemon):
    with pytest.raises(RuntimeError, match="max_atempts"):
        make_daemon(max_atempts=3)


def test_the_directory_takes_a_restart(daemon, confdir):
    """Issue 14's `directory:` holds connections, a password file and a CA: a
    reload keeps the running one and says so; logins go on against it."""
    totp = daemon.add_user("alice")
    edit(daemon, directory={"type": "ldap", "uri": ["ldaps://127.0.0.1:1"],
                            "base_dn": "ou=Users,dc=example,dc=com"})
    log = hup(daemon, "reloaded ")
    assert "directory changed; that takes a restart" in log
    del daemon.config["directory"]
    r = pd.run(confdir, service(confdir, daemon), "alice", [PASSWORD, code_at(totp)],
               call="both")
    assert r.rc == pd.PAM_SUCCESS, r


def test_with_ldap_the_group_keys_apply_on_reload_too():
    """Issue 21: the fleet's policy sets the group keys on a running daemon, so a reload
    does as well; directory/ldap.py takes their DN spellings (use_groups)."""
    local = config.parse({})
    ldap = config.parse({"directory": {"type": "ldap", "uri": ["ldaps://ldap.example.com"],
                                       "base_dn": "ou=Users,dc=example,dc=com"}})
    assert "directory" in jctotpd.restart_keys(local)
    assert "mfa_groups" not in jctotpd.restart_keys(local)
    assert not {"admin_groups", "exempt_groups", "mfa_groups"} & set(jctotpd.restart_keys(ldap))
    assert not set(config.POLICY_KEYS) & set(jctotpd.restart_keys(ldap))
