"""Many hosts, one directory, one MFA store (issue 14 with issue 13), through the real libpam.

Host A and host B are two jctotpd on one private PostgreSQL (make_host) whose
passwords are checked by binds against one private slapd (JumpCloud's layout,
tests/servers/slapd.py). A directory user provisioned on one host is the same
record on the other: the enrolled key, the used codes, the attempt counter, the lock.
Codes come from the secret and the daemons' test clock (pyotp), never hard-coded.
"""

from __future__ import annotations

import pamdriver as pd
import pyotp
import pytest
from fleetlib import service
from servers.slapd import slapd, slapd_server  # noqa: F401
from testlib import code_at, ldap_directory

from pam_jctotp.core.login import PASSWORD_PROMPT

pytestmark = [pytest.mark.fleet, pytest.mark.ldap]


@pytest.fixture
def make_ldap_host(make_host, slapd):  # noqa: F811
    """make_ldap_host("a", **config): a fleet host whose directory is the shared slapd
    (cn=mfa must use MFA)."""

    def make(name: str, **config):
        config.setdefault("mfa_groups", ["mfa"])
        config.setdefault("directory_sync_interval", 0)   # no Linux accounts made here
        return make_host(name, directory=ldap_directory(slapd), **config)

    return make


def events(hosts, name: str) -> list[dict]:
    return [e for h in hosts for e in h.audit_events() if e["event"] == name]


def test_a_directory_user_enrolled_on_a_logs_in_on_b_and_a_replay_is_refused(
        make_ldap_host, slapd, confdir):  # noqa: F811
    a = make_ldap_host("a", default_enrollment_days=3)
    b = make_ldap_host("b", default_enrollment_days=3)
    password = slapd.passwords["alice"]
    assert a.ok("user.list") == [] and b.ok("user.list") == []

    def person(message, transcript):   # scans the QR shown on A with a phone
        if message.text == PASSWORD_PROMPT:
            return password
        if "code" in message.text.lower() and "Enter" in message.text:
            return pyotp.TOTP(pd.key_from(transcript)).now()
        return ""

    r = pd.run(confdir, service(confdir, a), "alice", person, call="both")
    assert r.rc == pd.PAM_SUCCESS, r
    infos = "\n".join(m.text for m in r.transcript if m.style == "info")
    assert "otpauth://totp/" in infos and ("\u2584" in infos or "\u2580" in infos)
    totp = pyotp.TOTP(pd.key_from(r.transcript))
    assert b.user("alice")["mfa"] == "active"      # B sees A's record at once
    assert [e["user"] for e in events((a, b), "user_provisioned")] == ["alice"]

    b.set_clock(30)                                # the next time-step, on B
    code = code_at(totp, 30)
    svc_b = service(confdir, b)
    assert pd.run(confdir, svc_b, "alice", [password, code]).rc == pd.PAM_SUCCESS
    assert pd.run(confdir, svc_b, "alice", [password, code]).rc == pd.PAM_AUTH_ERR
    a.set_clock(30)                                # and on A: used is used fleet-wide
    assert pd.run(confdir, service(confdir, a), "alice", [password, code]
                  ).rc == pd.PAM_AUTH_ERR
    assert len(events((b,), "replay_refused")) == 1
    assert len(events((a,), "replay_refused")) == 1
    assert [e["user"] for e in events((a, b), "user_provisioned")] == ["alice"]


def test_wrong_ldap_passwords_on_a_and_b_count_against_one_counter(
        make_ldap_host, slapd, confdir):  # noqa: F811
    a = make_ldap_host("a", max_attempts=3, unlock_after=0)
    b = make_ldap_host("b", max_attempts=3, unlock_after=0)
    data = a.ok("user.add", name="alice", mfa=True, system_account=False)   # no local password
    totp = pyotp.parse_uri(data["otpauth_uri"])
    svc = {"a": service(confdir, a), "b": service(confdir, b)}
    # the right code each time: only the LDAP password is wrong
    for n, host in enumerate(("a", "b", "a")):
        r = pd.run(confdir, svc[host], "alice", [f"not the password {n}", code_at(totp)])
        assert r.rc == pd.PAM_AUTH_ERR, (host, r)
        assert b.user("alice")["failed_attempts"] == n + 1
    assert len(events((a, b), "locked")) == 1
    for host in (a, b):
        shown = host.user("alice")
        assert shown["locked"] and shown["failed_attempts"] == 3
    for host in ("b", "a"):   # locked on both: the right password and code are turned away
        r = pd.run(confdir, svc[host], "alice", [slapd.passwords["alice"], code_at(totp)])
        assert r.rc == pd.PAM_MAXTRIES, (host, r)
