"""A way in while the directory is down (issue 21): break_glass_group's password
verifiers (directory/offline.py), through the real libpam against the private slapd.

slapd stopped: a member of the (local) break-glass group logs in with password AND
code, checked against this host's argon2id verifier and the store; a non-member is
refused as before (AUTHINFO_UNAVAIL); a wrong password is refused and counted. While
slapd answers, the verifier is never used: a password slapd no longer takes is wrong
even though the verifier would take it.
"""

from __future__ import annotations

import grp
import itertools
import json
import os
import pwd
import subprocess
import time
from pathlib import Path

import pamdriver as pd
import pyotp
import pytest
from pamdriver import service
from testlib import as_user, code_at

pytestmark = pytest.mark.ldap

_n = itertools.count(1)


@pytest.fixture
def scratch():
    """A prefix for the local accounts and group this test makes (removed afterwards)."""
    prefix = f"jcbg{os.getpid()}t{next(_n)}"
    yield prefix
    for pw in pwd.getpwall():
        if pw.pw_name.startswith(prefix):
            subprocess.run(["userdel", pw.pw_name], capture_output=True)
    for gr in grp.getgrall():
        if gr.gr_name.startswith(prefix):
            subprocess.run(["groupdel", gr.gr_name], capture_output=True)


def enrolled(daemon, name: str) -> pyotp.TOTP:
    data = daemon.ok("user.add", name=name, mfa=True, system_account=False)
    return pyotp.parse_uri(data["otpauth_uri"])


def events(daemon, event: str, user: str) -> list[dict]:
    return [e for e in daemon.audit_events() if e["event"] == event and e["user"] == user]


def member_and_not(slapd, scratch: str) -> tuple[str, str, str]:
    """(a local break-glass group, ops in it, carl not): both directory users."""
    group, ops, carl = f"{scratch}bg", f"{scratch}o", f"{scratch}c"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-M", "-G", group, ops], check=True)
    subprocess.run(["useradd", "-M", carl], check=True)
    for name in (ops, carl):
        slapd.add_user(name)
    return group, ops, carl


def test_slapd_stopped_only_break_glass_members_log_in_with_password_and_code(
        ldap_daemon, slapd, confdir, scratch):
    group, ops, carl = member_and_not(slapd, scratch)
    daemon = ldap_daemon(break_glass_group=group, break_glass_password_max_age=600,
                         unlock_after=0, fail_delay=0.05,
                         testing={"clock_control": True})   # the production argon2id
    svc = service(confdir, daemon)
    totp = {name: enrolled(daemon, name) for name in (ops, carl)}
    folder = Path(daemon.config["state_dir"]) / "break-glass-passwords"

    def login(name, password, at, call="both"):
        return pd.run(confdir, svc, name, [password, code_at(totp[name], at)], call=call)

    # slapd answers: logins as always; the member's verifier is written at the login
    assert not (folder / ops).exists()
    assert login(ops, slapd.passwords[ops], 0).rc == pd.PAM_SUCCESS
    assert login(carl, slapd.passwords[carl], 0).rc == pd.PAM_SUCCESS
    verifier = json.loads((folder / ops).read_text())
    assert verifier["hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert os.stat(folder / ops).st_mode & 0o777 == 0o600
    assert os.stat(folder).st_mode & 0o777 == 0o700
    assert not (folder / carl).exists()               # not a member: no verifier
    assert slapd.passwords[ops] not in (folder / ops).read_text()

    # ... and never used while slapd answers: the old password, which the verifier
    # still holds, is wrong once the directory has another one
    old = slapd.passwords[ops]
    slapd.set_password(ops, "a new directory password")
    daemon.set_clock(30)
    assert login(ops, old, 30).rc == pd.PAM_AUTH_ERR
    assert daemon.user(ops)["failed_attempts"] == 1
    assert events(daemon, "break_glass_offline", ops) == []
    assert login(ops, slapd.passwords[ops], 30).rc == pd.PAM_SUCCESS   # verifier refreshed

    slapd.stop()
    try:
        daemon.set_clock(60)
        r = login(ops, slapd.passwords[ops], 60)      # password + code, from this host
        assert r.rc == pd.PAM_SUCCESS, daemon.log.read_text()
        assert [e["outcome"] for e in events(daemon, "break_glass_offline", ops)] == [
            "password ok"]
        # everyone else fails closed, as before
        assert login(carl, slapd.passwords[carl], 60).rc == pd.PAM_AUTHINFO_UNAVAIL
        # a wrong password is refused and counted; so is a right one with a wrong code
        daemon.set_clock(90)
        assert login(ops, old, 90, call="auth").rc == pd.PAM_AUTH_ERR
        assert daemon.user(ops)["failed_attempts"] == 1
        assert events(daemon, "break_glass_offline", ops)[-1]["outcome"] == "wrong password"
        r = pd.run(confdir, svc, ops, [slapd.passwords[ops], code_at(totp[ops], -600)])
        assert r.rc == pd.PAM_AUTH_ERR
        assert daemon.user(ops)["failed_attempts"] == 2
        # a verifier older than break_glass_password_max_age serves nobody
        daemon.set_clock(60 + 601)
        assert login(ops, slapd.passwords[ops], 60 + 601).rc == pd.PAM_AUTHINFO_UNAVAIL
        assert events(daemon, "break_glass_refused", ops)
    finally:
        slapd.start()
    log = daemon.log.read_text()
    assert slapd.passwords[ops] not in log and old not in log
    assert log.count("is checked against this host's verifier") == 1


def accounts_findings(daemon) -> list[tuple[str, str]]:
    return [tuple(f) for f in daemon.ok("doctor")["accounts"]]


def test_a_key_and_code_member_is_named_by_doctor_and_gets_a_verifier_from_break_glass(
        ldap_daemon, slapd, confdir, scratch):
    """A member who logs in with key + code gives no password to hash: doctor names
    them, and `jctotp break-glass` (theirs, or root's for them) asks the directory
    password, counts a wrong or odd one like a login's, and writes the verifier."""
    group, ops, carl = member_and_not(slapd, scratch)
    delay = 0.6
    daemon = ldap_daemon(break_glass_group=group, break_glass_password_max_age=600,
                         unlock_after=0,
                         fail_delay=delay, max_attempts=10)
    totp = enrolled(daemon, ops)
    enrolled(daemon, carl)
    folder = Path(daemon.config["state_dir"]) / "break-glass-passwords"

    [(level, what)] = [f for f in accounts_findings(daemon) if "break-glass" in f[1]]
    assert level == "warn" and ops in what and "jctotp break-glass" in what, what
    assert carl not in what

    # not a member: refused before any password is asked
    r = daemon.request("break-glass.admin", name=carl)
    assert r.exit == 1 and "not in break_glass_group" in r.message
    # a wrong password, and ones the LDAP library refuses (sshd's fake one, a TAB, a
    # NUL, too long):
    # each a failed attempt with the fail_delay, never an outage
    odd = ("not the password", "\b\n\r\177INCORRECT", "pass\tword", "a\x00b", "x" * 1025)
    for n, wrong in enumerate(odd):
        start = time.monotonic()
        r = daemon.request("break-glass.admin", answers=[wrong], name=ops)
        took = time.monotonic() - start
        assert r.exit == 1 and "not right" in r.message, r.message
        assert took >= delay, took
        assert daemon.user(ops)["failed_attempts"] == n + 1
    assert not (folder / ops).exists()
    assert "unavailable" not in daemon.log.read_text()
    # the right one (the member themselves): written; the counter is not reset by a
    # password alone (no code was asked)
    uid = pwd.getpwnam(ops).pw_uid
    r = as_user(uid, daemon.config["control_socket"], "break-glass",
                answers=[slapd.passwords[ops]])
    assert r["exit"] == 0, r
    assert json.loads((folder / ops).read_text())["hash"].startswith("$argon2id$")
    assert daemon.user(ops)["failed_attempts"] == len(odd)
    [written] = events(daemon, "break_glass_verifier", ops)
    assert written["actor"] == ops
    [(level, what)] = [f for f in accounts_findings(daemon) if "break-glass" in f[1]]
    assert level == "ok", what

    # the directory down: the member gets in with password + code from that verifier
    slapd.stop()
    try:
        r = pd.run(confdir, service(confdir, daemon), ops,
                   [slapd.passwords[ops], code_at(totp)])
        assert r.rc == pd.PAM_SUCCESS, daemon.log.read_text()
        # and `break-glass` writes nothing from the verifier itself
        r = daemon.request("break-glass.admin", answers=[slapd.passwords[ops]], name=ops)
        assert r.exit == 69 and "unavailable" in r.message
    finally:
        slapd.start()
    # past break_glass_password_max_age: doctor says so
    daemon.set_clock(601)
    [(level, what)] = [f for f in accounts_findings(daemon) if "break-glass" in f[1]]
    assert level == "warn" and "older than break_glass_password_max_age" in what and ops in what
