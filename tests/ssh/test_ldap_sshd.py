"""The real sshd and OpenSSH client against the private slapd (issue 14): the
user types their directory (LDAP) password, appears in jctotp by themself, and
a member of the `mfa` group enrolls inside that first SSH login.

The container runs with host networking, so its jctotpd reaches the test slapd
on 127.0.0.1; the CA and the service password are copied in. The Linux
accounts are made with useradd, as sssd/nslcd would provide them on a host.
"""

from __future__ import annotations

import json

import pytest
import yaml
from servers.slapd import slapd, slapd_server  # noqa: F401
from sshlib import KEY_RE, TEST_CONFIG, Totp, finish
from testlib import ldap_directory

ENROLL_PROMPT = "(Enter to skip): "


@pytest.fixture
def ldap_sshd(fresh_sshd, slapd):  # noqa: F811
    s = fresh_sshd("password")
    s.ok("mkdir -p /etc/jctotp && cat > /etc/jctotp/ldap-ca.pem",
         stdin=slapd.ca_file.read_text())
    s.ok("umask 077 && cat > /etc/jctotp/ldap.pw", stdin=slapd.bind_password + "\n")
    # directory_sync_interval 0: no directory sync, the accounts are this fixture's
    # (test_directory_accounts.py tests the sync's own through sshd)
    config = dict(TEST_CONFIG, mfa_groups=["mfa"], admin_groups=["admins"],
                  directory_sync_interval=0,
                  directory=ldap_directory(slapd, ca_file="/etc/jctotp/ldap-ca.pem",
                                           bind_password_file="/etc/jctotp/ldap.pw"))
    s.ok("cat > /etc/jctotp/config.yaml", stdin=yaml.safe_dump(config))
    s.ok("jctotpd-service restart")
    for name in ("alice", "bob"):
        s.ok(f"id {name} >/dev/null 2>&1 || (useradd -m -s /bin/bash {name} && "
             f"usermod -p '*' {name})")
    return s


def test_ldap_password_over_ssh_and_enrollment_at_first_login(ldap_sshd, slapd):  # noqa: F811
    s = ldap_sshd
    # bob: no MFA group -> the directory password alone
    r = s.login("bob", slapd.passwords["bob"], None)
    assert r.ok and "ran-as-bob" in r.output, s.logs()
    assert not s.login("bob", "not bob's password", None).ok

    # alice (cn=mfa): the first login shows the QR code and enrolls
    child = s.ssh("alice", "echo ran-as-$(id -un)")
    child.expect_exact("Directory password: ")
    child.sendline(slapd.passwords["alice"])
    child.expect_exact(ENROLL_PROMPT)
    screen = child.before
    assert "otpauth://totp/" in screen
    totp = Totp(KEY_RE.search(screen).group(1).replace(" ", ""))
    child.sendline(totp.fresh())
    child.expect_exact("Press Enter when you have stored them: ")
    child.sendline("")
    r = finish(child)
    assert r.ok and "ran-as-alice" in r.output, s.logs()

    listed = {u["name"]: u for u in json.loads(s.ok("jctotp user list --json"))}
    assert listed["alice"]["mfa"] == "active" and listed["bob"]["mfa"] == "off"
    # next login: LDAP password, then a fresh code
    assert s.login("alice", slapd.passwords["alice"], totp.fresh()).ok
