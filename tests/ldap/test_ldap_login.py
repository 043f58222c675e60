"""Issue 14 through the real libpam: the built shim, a real jctotpd, passwords checked
by binds against the private slapd (JumpCloud's layout: tests/servers/slapd.py).

Codes come from the secret and the clock (pyotp); prompts are the login's own.
"""

from __future__ import annotations

import time

import pamdriver as pd
import pyotp
import pytest
from pamdriver import key_from, service
from servers.slapd import ADMINS, MFA, Slapd
from testlib import code_at

from pam_jctotp.core.login import CODE_PROMPT, PASSWORD_PROMPT

pytestmark = pytest.mark.ldap


def prompts(result: pd.Result) -> list[str]:
    return [m.text for m in result.transcript if m.style.startswith("prompt")]


def enrolled(daemon, name: str) -> pyotp.TOTP:
    """An MFA record with an active key for a directory user (no local password)."""
    data = daemon.ok("user.add", name=name, mfa=True, system_account=False)
    return pyotp.parse_uri(data["otpauth_uri"])


def binds_after(slapd: Slapd, mark: int, expect: str, wait: float = 5.0) -> list[str]:
    """The binds slapd logged since `mark`, once `expect` appears among them."""
    deadline = time.monotonic() + wait
    while expect not in slapd.binds_since(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    return slapd.binds_since(mark)


def test_ldap_password_and_code_log_in(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon()
    totp = enrolled(daemon, "bob")
    svc = service(confdir, daemon)
    r = pd.run(confdir, svc, "bob", [slapd.passwords["bob"], code_at(totp)], call="both")
    assert r.rc == pd.PAM_SUCCESS, r
    assert prompts(r) == [PASSWORD_PROMPT, CODE_PROMPT]
    assert daemon.user("bob")["failed_attempts"] == 0


def test_the_local_password_table_is_not_asked(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon()
    totp = enrolled(daemon, "bob")
    r = pd.run(confdir, service(confdir, daemon), "bob", ["correct horse battery",
                                                         code_at(totp)])
    assert r.rc == pd.PAM_AUTH_ERR


def test_a_wrong_ldap_password_counts_one_attempt(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon()
    totp = enrolled(daemon, "bob")
    svc = service(confdir, daemon)
    r = pd.run(confdir, svc, "bob", ["not the password", code_at(totp)])
    assert r.rc == pd.PAM_AUTH_ERR
    assert daemon.user("bob")["failed_attempts"] == 1
    # the right code was not burnt by the wrong password
    assert pd.run(confdir, svc, "bob", [slapd.passwords["bob"], code_at(totp)]
                  ).rc == pd.PAM_SUCCESS


def test_an_admin_from_the_ldap_group_is_capped_at_five(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon(max_attempts=10)
    svc = service(confdir, daemon)
    for i in range(5):
        r = pd.run(confdir, svc, "carol", [f"wrong {i}", "000000"])
        assert r.rc == pd.PAM_AUTH_ERR, (i, r)
    shown = daemon.user("carol")
    assert shown["admin"] and shown["max_attempts"] == 5 and shown["locked"]
    r = pd.run(confdir, svc, "carol", [slapd.passwords["carol"], "000000"])
    assert r.rc == pd.PAM_MAXTRIES
    assert daemon.user("bob" if False else "carol")["locked"]


def test_a_group_written_as_a_dn_matches_whatever_its_spelling(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon(max_attempts=10,
                         admin_groups=[slapd.group_dn(ADMINS).upper().replace(",", ", ")])
    pd.run(confdir, service(confdir, daemon), "carol", ["wrong", "000000"])
    assert daemon.user("carol")["max_attempts"] == 5


@pytest.mark.parametrize("name", ["*)(uid=*", "admin)(|(uid=*", "*", "ALICE", "alice*"])
def test_injection_and_case_find_nobody(ldap_daemon, slapd, confdir, name):
    daemon = ldap_daemon()
    svc = service(confdir, daemon)
    mark = slapd.log_mark()
    r = pd.run(confdir, svc, name, [slapd.passwords["alice"], "123456"])
    assert r.rc == pd.PAM_AUTH_ERR
    unknown = pd.run(confdir, svc, "nosuchuser", [slapd.passwords["alice"], "123456"])
    assert prompts(r) == prompts(unknown)   # as for any unknown user
    assert daemon.ok("user.list") == []
    users = {slapd.user_dn(n) for n in ("alice", "bob", "carol", "dave")}
    assert not users & set(slapd.binds_since(mark))


def test_an_empty_password_is_refused_without_a_bind(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon(mfa_groups=[])
    svc = service(confdir, daemon)
    alice = slapd.user_dn("alice")
    mark = slapd.log_mark()
    r = pd.run(confdir, svc, "alice", [""])
    assert r.rc == pd.PAM_AUTH_ERR
    assert daemon.user("alice")["failed_attempts"] == 1
    # a right password afterwards binds, and is the only bind as alice since the mark
    assert pd.run(confdir, svc, "alice", [slapd.passwords["alice"]]).rc == pd.PAM_SUCCESS
    assert binds_after(slapd, mark, alice).count(alice) == 1


@pytest.mark.parametrize("tls", ["ldaps", "starttls"])
def test_the_wrong_ca_is_refused(ldap_daemon, slapd, confdir, tls):
    uri = {"uri": [slapd.ldap_uri], "start_tls": True} if tls == "starttls" else {}
    daemon = ldap_daemon(directory={"ca_file": str(slapd.wrong_ca_file), **uri})
    r = pd.run(confdir, service(confdir, daemon), "alice", [slapd.passwords["alice"]])
    assert r.rc == pd.PAM_AUTHINFO_UNAVAIL
    assert "certificate" in daemon.log.read_text()


def test_starttls_works_for_ldap_uris(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon(directory={"uri": [slapd.ldap_uri], "start_tls": True})
    totp = enrolled(daemon, "bob")
    r = pd.run(confdir, service(confdir, daemon), "bob", [slapd.passwords["bob"],
                                                         code_at(totp)])
    assert r.rc == pd.PAM_SUCCESS


def test_uris_are_tried_in_order(ldap_daemon, slapd, confdir):
    dead = "ldaps://127.0.0.1:9"   # discard port: nothing listens
    daemon = ldap_daemon(directory={"uri": [dead, slapd.ldaps_uri]})
    totp = enrolled(daemon, "bob")
    r = pd.run(confdir, service(confdir, daemon), "bob", [slapd.passwords["bob"],
                                                         code_at(totp)])
    assert r.rc == pd.PAM_SUCCESS


def outage_lines(daemon) -> list[str]:
    return [line for line in daemon.log.read_text().splitlines()
            if "directory unavailable" in line]


def test_slapd_stopped_fails_closed_then_recovers(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon()
    totp = enrolled(daemon, "bob")
    svc = service(confdir, daemon)
    assert pd.run(confdir, svc, "bob", [slapd.passwords["bob"], code_at(totp)]
                  ).rc == pd.PAM_SUCCESS
    slapd.stop()
    try:
        for name in ("bob", "alice", "bob"):
            r = pd.run(confdir, svc, name, [slapd.passwords[name], "123456"])
            assert r.rc == pd.PAM_AUTHINFO_UNAVAIL, r
            assert r.elapsed < 5
    finally:
        slapd.start()
    assert len(outage_lines(daemon)) == 1, daemon.log.read_text()
    daemon.set_clock(30)   # a fresh time-step for the next code
    r = pd.run(confdir, svc, "bob", [slapd.passwords["bob"], code_at(totp, 30)])
    assert r.rc == pd.PAM_SUCCESS, daemon.log.read_text()
    assert "directory reachable again" in daemon.log.read_text()
    assert daemon.user("bob")["failed_attempts"] == 0   # an outage is nobody's guess


def test_a_frozen_slapd_fails_closed_within_the_shim_timeout(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon(directory={"timeout": 10})   # the shim's timeout comes first
    svc = service(confdir, daemon, timeout=3)
    slapd.freeze()
    try:
        r = pd.run(confdir, svc, "alice", [slapd.passwords["alice"], "123456"])
    finally:
        slapd.thaw()
    assert r.rc == pd.PAM_AUTHINFO_UNAVAIL
    assert r.elapsed < 3 + 1


def test_first_login_of_an_mfa_group_member_shows_the_enrollment_qr(ldap_daemon, slapd,
                                                                     confdir):
    daemon = ldap_daemon(default_enrollment_days=3)
    svc = service(confdir, daemon)
    assert daemon.ok("user.list") == []

    def person(message, transcript):
        if message.text == PASSWORD_PROMPT:
            return slapd.passwords["alice"]
        if "code" in message.text.lower() and "Enter" in message.text:
            return pyotp.TOTP(key_from(transcript)).now()
        return ""

    r = pd.run(confdir, svc, "alice", person, call="both")
    assert r.rc == pd.PAM_SUCCESS, r
    text = "\n".join(m.text for m in r.transcript)
    assert "3 day(s) left" in text and "\u2588" in text or "\u2580" in text
    shown = daemon.user("alice")
    assert shown["mfa"] == "active"
    provisioned = [e for e in daemon.audit_events() if e["event"] == "user_provisioned"]
    assert [e["user"] for e in provisioned] == ["alice"]


def test_first_login_outside_mfa_groups_is_password_only(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon()
    r = pd.run(confdir, service(confdir, daemon), "bob", [slapd.passwords["bob"]],
               call="both")
    assert r.rc == pd.PAM_SUCCESS
    assert prompts(r) == [PASSWORD_PROMPT]
    assert daemon.user("bob")["mfa"] == "off"


def test_mfa_groups_match_by_dn(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon(mfa_groups=[slapd.group_dn(MFA)])
    pd.run(confdir, service(confdir, daemon), "alice", [slapd.passwords["alice"], ""])
    assert daemon.user("alice")["mfa"] == "pending"


def test_user_list_shows_directory_users_with_a_record(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon()
    svc = service(confdir, daemon)
    pd.run(confdir, svc, "bob", [slapd.passwords["bob"]])
    pd.run(confdir, svc, "carol", ["wrong", ""])
    listed = {u["name"]: u for u in daemon.ok("user.list")}
    assert set(listed) == {"bob", "carol"}
    assert listed["carol"]["admin"] and listed["carol"]["mfa"] == "enroll_now"  # no grace
    assert listed["carol"]["failed_attempts"] == 1
    assert "dave" not in listed and "alice" not in listed


def test_a_user_added_to_the_directory_later_appears_by_themself(ldap_daemon, slapd,
                                                                 confdir):
    daemon = ldap_daemon()
    name = f"newcomer{int(time.time() * 1000) % 100000}"
    password = slapd.add_user(name, groups=(MFA,))
    r = pd.run(confdir, service(confdir, daemon), name, [password, ""], call="both")
    assert r.rc == pd.PAM_SUCCESS   # skipped enrollment, inside the period
    assert daemon.user(name)["mfa"] == "pending"


def test_a_refused_service_bind_fails_closed_with_one_line(ldap_daemon, slapd, confdir,
                                                           tmp_path):
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("not-the-service-password\n")
    wrong.chmod(0o600)
    daemon = ldap_daemon(directory={"bind_password_file": str(wrong)})
    svc = service(confdir, daemon)
    for _ in range(3):
        r = pd.run(confdir, svc, "alice", [slapd.passwords["alice"]])
        assert r.rc == pd.PAM_AUTHINFO_UNAVAIL
    log = daemon.log.read_text()
    assert len(outage_lines(daemon)) == 1 and "service bind" in log
    assert "reachable again" not in log
    assert slapd.passwords["svc-jctotp"] not in log and slapd.passwords["alice"] not in log


def test_user_add_with_a_password_is_refused_for_an_ldap_directory(ldap_daemon):
    daemon = ldap_daemon()
    r = daemon.request("user.add", name="bob", password="a local password", mfa=False,
                       system_account=False)
    assert r.exit == 2 and "--no-password" in r.message
    assert daemon.ok("user.list") == []


def test_a_record_whose_user_left_the_directory_is_refused_in_account(ldap_daemon, slapd,
                                                                      confdir):
    daemon = ldap_daemon()
    gone = f"gone{int(time.time() * 1000) % 100000}"
    slapd.add_user(gone)
    daemon.ok("user.add", name=gone, system_account=False)
    slapd.remove_user(gone)   # no longer in LDAP
    daemon.stop()
    daemon.start()            # nothing cached
    r = pd.run(confdir, service(confdir, daemon), gone, [], call="acct")
    assert r.rc == pd.PAM_PERM_DENIED
    assert any("no longer in the directory" in m.text for m in r.transcript)
    r = pd.run(confdir, service(confdir, daemon), "bob", [], call="acct")
    assert r.rc == pd.PAM_SUCCESS   # provisioned now, still in the directory
