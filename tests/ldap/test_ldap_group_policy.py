"""Issue 21 item 1: group policy holds however the record was made, and when membership
changes later (core/provisioning.apply_groups). Through the real libpam against the
private slapd; the daemon is restarted after a membership change so that nothing is
answered from its 10 s directory cache.
"""

from __future__ import annotations

import time

import pamdriver as pd
import pyotp
import pytest
from pamdriver import key_from, service
from servers.slapd import ADMINS, MFA

from pam_jctotp.core.login import PASSWORD_PROMPT

pytestmark = pytest.mark.ldap


def fresh_name(prefix: str) -> str:
    """slapd lives for the session: each test adds its own users."""
    return f"{prefix}{int(time.time() * 1000) % 1000000}"


def enrolling(password: str):
    """A person who answers the password, then enrolls from the QR code's key."""
    def answer(message, transcript):
        if message.text == PASSWORD_PROMPT:
            return password
        if "code" in message.text.lower() and "Enter" in message.text:
            return pyotp.TOTP(key_from(transcript)).now()
        return ""
    return answer


def restart(daemon) -> None:
    daemon.stop()
    daemon.start()


def test_user_add_no_password_of_an_mfa_admin_must_enroll_at_first_login(ldap_daemon, slapd,
                                                                         confdir):
    daemon = ldap_daemon()
    # carol: cn=admins and cn=mfa; the README's way to add a directory user ahead of time
    out = daemon.cli("user", "add", "carol", "--no-password", "--no-system-account")
    assert out.returncode == 0, out.stderr
    assert "enrollment at the next login" in out.stdout + out.stderr
    shown = daemon.user("carol")
    assert shown["mfa"] == "enroll_now" and shown["admin"]
    svc = service(confdir, daemon)
    # no password-only login: an empty code (skip) is refused
    r = pd.run(confdir, svc, "carol", [slapd.passwords["carol"], ""], call="both")
    assert r.rc != pd.PAM_SUCCESS, r
    r = pd.run(confdir, svc, "carol", enrolling(slapd.passwords["carol"]), call="both")
    assert r.rc == pd.PAM_SUCCESS, r
    assert daemon.user("carol")["mfa"] == "active"
    assert not [e for e in daemon.audit_events()
                if e["event"] == "login_ok" and e.get("how") == "password_only"]


def test_joining_mfa_groups_later_requires_enrollment(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon(default_enrollment_days=4)
    name = fresh_name("joiner")
    password = slapd.add_user(name)
    svc = service(confdir, daemon)
    r = pd.run(confdir, svc, name, [password], call="both")
    assert r.rc == pd.PAM_SUCCESS and daemon.user(name)["mfa"] == "off"
    slapd.add_to_group(MFA, name)
    restart(daemon)
    r = pd.run(confdir, svc, name, [password, ""], call="both")
    text = "\n".join(m.text for m in r.transcript)
    assert "4 day(s) left" in text, text           # the default period, shown at login
    shown = daemon.user(name)
    assert shown["mfa"] == "pending", shown
    reasons = [e.get("reason") for e in daemon.audit_events() if e["event"] == "mfa_enabled"]
    assert reasons == ["member of mfa_groups"]


def test_joining_admin_groups_ends_the_enrollment_period(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon()
    name = fresh_name("promoted")
    password = slapd.add_user(name, groups=(MFA,))
    svc = service(confdir, daemon)
    assert pd.run(confdir, svc, name, [password, ""], call="both").rc == pd.PAM_SUCCESS
    assert daemon.user(name)["mfa"] == "pending"   # skipped, inside the period
    slapd.add_to_group(ADMINS, name)
    restart(daemon)
    r = pd.run(confdir, svc, name, [password, ""], call="both")
    assert r.rc != pd.PAM_SUCCESS, r               # no more skipping
    assert daemon.user(name)["mfa"] == "enroll_now"
    r = pd.run(confdir, svc, name, enrolling(password), call="both")
    assert r.rc == pd.PAM_SUCCESS, r


def test_user_add_of_a_name_the_directory_does_not_know_is_refused(ldap_daemon):
    daemon = ldap_daemon()
    out = daemon.cli("user", "add", "nosuchuser", "--no-password", "--no-system-account")
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "not in the directory" in out.stderr and "Traceback" not in out.stderr
    assert daemon.ok("user.list") == []
