"""LdapDirectory on its own against the private slapd (pam_jctotp/directory/ldap.py)."""

from __future__ import annotations

import os
import time

import pytest
from servers.slapd import ADMINS, MFA, Slapd
from testlib import ldap_directory

from pam_jctotp.config.directory import parse_directory
from pam_jctotp.directory.ldap import LdapDirectory
from pam_jctotp.errors import ConfigError
from pam_jctotp.secret import Secret

pytestmark = pytest.mark.ldap


class NoNss:
    def groups_of(self, name: str) -> frozenset[str]:
        return frozenset({"nss-group"}) if name == "carol" else frozenset()

    def uid_to_name(self, uid: int) -> str | None:
        return None

    def exists(self, name: str) -> bool:
        return False

    def create_account(self, name: str) -> bool:
        return False


def directory(slapd: Slapd, groups=(), **overrides) -> LdapDirectory:
    return LdapDirectory(parse_directory(ldap_directory(slapd, **overrides)), NoNss(), groups)


def test_groups_by_cn_and_dn_and_nss(slapd: Slapd):
    groups = directory(slapd).groups_of("carol")
    assert {ADMINS, MFA, slapd.group_dn(ADMINS), slapd.group_dn(MFA), "nss-group"} <= groups


def test_a_group_search_instead_of_member_of(slapd: Slapd):
    d = directory(slapd, group_base_dn=slapd.groups_dn, group_attribute="description")
    assert {ADMINS, MFA, slapd.group_dn(ADMINS)} <= d.groups_of("carol")


def test_unknown_users_cost_a_bind_too(slapd: Slapd):
    d = directory(slapd)
    mark = slapd.log_mark()
    assert not d.verify_password("no-such-user", Secret("some password"))
    deadline = time.monotonic() + 5
    while not slapd.binds_since(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    binds = slapd.binds_since(mark)
    assert binds and all(b.startswith("cn=jctotp-no-such-user") or b == slapd.bind_dn
                         for b in binds)


def test_right_and_wrong_passwords(slapd: Slapd):
    d = directory(slapd)
    assert d.verify_password("alice", Secret(slapd.passwords["alice"]))
    assert not d.verify_password("alice", Secret(slapd.passwords["alice"] + "x"))
    assert not d.verify_password("alice", Secret(""))
    assert d.exists("alice") and not d.exists("ALICE") and not d.exists("*")


def test_a_readable_bind_password_file_is_refused(slapd: Slapd, tmp_path):
    loose = tmp_path / "ldap.pw"
    loose.write_text(slapd.bind_password + "\n")
    os.chmod(loose, 0o644)
    with pytest.raises(ConfigError, match="'directory.bind_password_file'.*0600"):
        directory(slapd, bind_password_file=str(loose))


def test_a_missing_ca_file_is_refused(slapd: Slapd, tmp_path):
    with pytest.raises(ConfigError, match="'directory.ca_file'"):
        directory(slapd, ca_file=str(tmp_path / "nope.pem"))


@pytest.mark.parametrize("password", ["\x00", "a\x00b", "x" * 1025, "\ud800", "\u00ad", "\ue000",
                                      "\b\n\r\x7fINCORRECT", "a\tb", ""])
def test_a_password_ldap3_will_not_send_is_wrong_and_binds_as_nobody(slapd: Slapd, password):
    d = directory(slapd)
    mark = slapd.log_mark()
    assert d.verify_password("bob", Secret(password)) is False   # no DirectoryUnavailable
    time.sleep(0.2)
    binds = slapd.binds_since(mark)
    assert slapd.user_dn("bob") not in binds and any("jctotp-no-such-user" in b for b in binds)
    assert d.verify_password("bob", Secret(slapd.passwords["bob"])) is True


def test_the_identity_attributes_are_configurable(slapd: Slapd):
    """Issue 21: the POSIX identity comes from uidNumber, gidNumber, homeDirectory and
    loginShell by default (JumpCloud's layout), or from the attributes configured."""
    name = f"attrs{os.getpid() % 100000}"
    slapd.add_user(name, uid=20010, shell="/bin/sh")
    slapd.ldapmodify(f"dn: {slapd.user_dn(name)}\nchangetype: modify\n"
                     "add: employeeNumber\nemployeeNumber: 31337\n-\n"
                     "add: departmentNumber\ndepartmentNumber: 4242\n-\n"
                     "add: description\ndescription: /srv/home/elsewhere\n-\n"
                     "add: title\ntitle: /usr/bin/zsh\n")
    default = directory(slapd).identity(name)
    assert default is not None
    assert (default.uid, default.gid, default.home, default.shell) == (
        20010, 20010, f"/home/{name}", "/bin/sh")
    mapped = directory(slapd, uid_number_attribute="employeeNumber",
                       gid_number_attribute="departmentNumber",
                       home_directory_attribute="description",
                       login_shell_attribute="title")
    found = mapped.identity(name)
    assert found is not None
    assert (found.uid, found.gid, found.home, found.shell) == (
        31337, 4242, "/srv/home/elsewhere", "/usr/bin/zsh")
    assert mapped.members()[name].identity == found     # the sync reads the same names
