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
from pathlib import Path

import pamdriver as pd
import pyotp
import pytest
from pamdriver import service
from testlib import code_at

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


def test_slapd_stopped_only_break_glass_members_log_in_with_password_and_code(
        ldap_daemon, slapd, confdir, scratch):
    group, ops, carl = f"{scratch}bg", f"{scratch}o", f"{scratch}c"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-M", "-G", group, ops], check=True)
    subprocess.run(["useradd", "-M", carl], check=True)
    for name in (ops, carl):
        slapd.add_user(name)
    daemon = ldap_daemon(break_glass_group=group, break_glass_max_age=600, unlock_after=0,
                         fail_delay=0.05,
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
        # a verifier older than break_glass_max_age serves nobody
        daemon.set_clock(60 + 601)
        assert login(ops, slapd.passwords[ops], 60 + 601).rc == pd.PAM_AUTHINFO_UNAVAIL
        assert events(daemon, "break_glass_refused", ops)
    finally:
        slapd.start()
    log = daemon.log.read_text()
    assert slapd.passwords[ops] not in log and old not in log
    assert log.count("is checked against this host's verifier") == 1
