"""Issue 21: accounts the daemon makes carry the directory's identity (uidNumber,
gidNumber, homeDirectory, loginShell), so a user has the same UID on every host; a UID
another local account already has is refused, never renumbered.

These make real Linux accounts on the test machine (as tests/fleet does), under
names of their own (`jcid<pid>_...`), removed afterwards."""

from __future__ import annotations

import grp
import os
import pwd
import random
import subprocess

import pytest

pytestmark = pytest.mark.ldap


def free_uid() -> int:
    """A UID (and GID) no local account or group has."""
    while True:
        uid = random.randint(42000, 59000)
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(uid)
        except KeyError:
            return uid


@pytest.fixture
def names():
    made: list[str] = []

    def name(tag: str) -> str:
        n = f"jcid{os.getpid() % 100000}{tag}{len(made)}"
        made.append(n)
        return n

    yield name
    for n in made:
        subprocess.run(["userdel", "-r", n], capture_output=True)
        subprocess.run(["groupdel", n], capture_output=True)


def test_user_add_makes_the_account_with_the_directorys_identity(ldap_daemon, slapd, names):
    daemon = ldap_daemon(create_system_accounts=True)
    name, uid = names("a"), free_uid()
    slapd.add_user(name, uid=uid, shell="/bin/sh")
    data = daemon.ok("user.add", name=name, mfa=False, system_account=True)
    assert data["system_account_created"]
    pw = pwd.getpwnam(name)
    assert (pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell) == (uid, uid, f"/home/{name}",
                                                               "/bin/sh")
    assert grp.getgrgid(uid).gr_name == name   # the primary group, made with its GID


def test_a_uid_clash_is_refused_with_one_clear_message(ldap_daemon, slapd, names):
    daemon = ldap_daemon(create_system_accounts=True)
    local, name, uid = names("l"), names("d"), free_uid()
    subprocess.run(["useradd", "--uid", str(uid), local], check=True, capture_output=True)
    slapd.add_user(name, uid=uid)
    r = daemon.request("user.add", name=name, mfa=False, system_account=True)
    assert r.exit != 0
    assert f"UID {uid}" in r.message and local in r.message, r.message
    with pytest.raises(KeyError):
        pwd.getpwnam(name)            # not created, not renumbered
    assert pwd.getpwuid(uid).pw_name == local
