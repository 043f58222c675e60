"""`jctotp passwd` with the LDAP directory: RFC 3062 Password Modify (issue 14).

Self-service runs as uid 65534 ("nobody", a system user everywhere), which is
also a user in the test slapd. The new password is proved by a bind with it.
"""

from __future__ import annotations

import secrets

import ldap3
import pyotp
import pytest
from ldap3.core.exceptions import LDAPBindError
from servers.slapd import Slapd
from testlib import as_user, code_at

pytestmark = pytest.mark.ldap

NOBODY = 65534


def binds(slapd: Slapd, name: str, password: str) -> bool:
    tls = ldap3.Tls(ca_certs_file=str(slapd.ca_file))
    server = ldap3.Server(slapd.ldaps_uri, tls=tls, connect_timeout=2)
    try:
        ldap3.Connection(server, slapd.user_dn(name), password, auto_bind=True,
                         receive_timeout=2)
    except LDAPBindError:
        return False
    return True


@pytest.fixture
def nobody(slapd: Slapd) -> str:
    """The directory user "nobody", with a fresh password."""
    password = "old-" + secrets.token_urlsafe(12)
    if "nobody" in slapd.passwords:
        slapd.set_password("nobody", password)
    else:
        slapd.add_user("nobody", password)
    return password


def test_self_passwd_changes_the_ldap_password_with_password_and_code(ldap_daemon, slapd,
                                                                      nobody):
    daemon = ldap_daemon()
    totp = pyotp.parse_uri(daemon.ok("user.add", name="nobody", mfa=True,
                                     system_account=False)["otpauth_uri"])
    new = "new-" + secrets.token_urlsafe(12)
    out = as_user(NOBODY, daemon.config["control_socket"], "passwd",
                  answers=[nobody, code_at(totp), new, new])
    assert out["exit"] == 0, out
    prompts = [t for k, t in out["transcript"] if k == "prompt"]
    assert prompts[0] == "Current password: " and "verification code" in prompts[1]
    assert binds(slapd, "nobody", new) and not binds(slapd, "nobody", nobody)
    slapd.passwords["nobody"] = new
    assert any(e["event"] == "password_changed" for e in daemon.audit_events())


def test_self_passwd_with_a_wrong_code_changes_nothing(ldap_daemon, slapd, nobody):
    daemon = ldap_daemon()
    totp = pyotp.parse_uri(daemon.ok("user.add", name="nobody", mfa=True,
                                     system_account=False)["otpauth_uri"])
    wrong = f"{(int(code_at(totp)) + 1) % 1000000:06d}"
    out = as_user(NOBODY, daemon.config["control_socket"], "passwd",
                  answers=[nobody, wrong])
    assert out["exit"] == 1
    assert binds(slapd, "nobody", nobody)
    assert daemon.user("nobody")["failed_attempts"] == 1


def test_self_passwd_with_a_wrong_current_password_changes_nothing(ldap_daemon, slapd,
                                                                   nobody):
    daemon = ldap_daemon(mfa_groups=[])
    out = as_user(NOBODY, daemon.config["control_socket"], "passwd",
                  answers=["not it at all"])
    assert out["exit"] == 1
    assert binds(slapd, "nobody", nobody)
    # the first self-service request made the record (a directory user appears by itself)
    assert daemon.user("nobody")["failed_attempts"] == 1


def test_self_passwd_refused_by_the_directory_says_where_to_change_it(ldap_daemon, slapd,
                                                                      nobody):
    hint = "at https://console.jumpcloud.com/userconsole"
    daemon = ldap_daemon(mfa_groups=[], directory={"password_change_hint": hint})
    # This directory lets nobody write their own password.
    slapd.ldapmodify(_acl("by self read"))
    try:
        new = "new-" + secrets.token_urlsafe(12)
        out = as_user(NOBODY, daemon.config["control_socket"], "passwd",
                      answers=[nobody, new, new])
    finally:
        slapd.ldapmodify(_acl("by self write"))
    assert out["exit"] == 1, out
    assert hint in out["message"] and "Nothing was changed" in out["message"]
    assert binds(slapd, "nobody", nobody)


def test_admin_passwd_is_refused_clearly_when_the_service_account_may_not(ldap_daemon, slapd,
                                                                         nobody):
    daemon = ldap_daemon(mfa_groups=[])
    daemon.ok("user.add", name="nobody", system_account=False)
    r = daemon.request("passwd.admin", name="nobody", password="new-password-123")
    assert r.exit == 1
    assert "does not let jctotp change the password of nobody" in r.message
    assert "change it where your directory account is managed" in r.message
    assert binds(slapd, "nobody", nobody)


def test_admin_passwd_works_where_the_service_account_may(ldap_daemon, slapd, nobody):
    daemon = ldap_daemon(mfa_groups=[])
    daemon.ok("user.add", name="nobody", system_account=False)
    slapd.ldapmodify(_acl(f'by dn.exact="{slapd.bind_dn}" write by self write'))
    try:
        new = "new-" + secrets.token_urlsafe(12)
        r = daemon.request("passwd.admin", name="nobody", password=new)
    finally:
        slapd.ldapmodify(_acl("by self write"))
    assert r.exit == 0, r.message
    assert binds(slapd, "nobody", new)
    slapd.passwords["nobody"] = new


def _acl(who: str) -> str:
    """Replace the password rule of the test slapd's database (olcAccess {0})."""
    return ("dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\ndelete: olcAccess\n"
            "olcAccess: {0}\n-\nadd: olcAccess\n"
            f"olcAccess: {{0}}to attrs=userPassword {who} by anonymous auth by * none\n")
