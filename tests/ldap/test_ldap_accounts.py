"""Issue 21: accounts the daemon makes carry the directory's identity (uidNumber,
gidNumber, homeDirectory, loginShell), so a user has the same UID on every host; a UID
another local account already has is refused, never renumbered.

These make real Linux accounts on the test machine (as tests/fleet does), under
names of their own (`jcid<pid>_...`), removed afterwards."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import time

import pytest
from testlib import account, eventually, free_uid

from pam_jctotp.directory.nss import NssAccounts

pytestmark = pytest.mark.ldap



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


@pytest.mark.parametrize("which", ["break_glass_group", "system group"])
def test_a_gid_of_a_protected_or_system_group_is_refused(ldap_daemon, slapd, names, which):
    """The rollout walk: `groupadd ops` took the next directory user's gidNumber, and that
    user became a break-glass member through the primary group. A directory GID that is
    break_glass_group's (or the automation group's, or any system group's) is refused."""
    tag = "s" if which == "system group" else "b"   # (names repeat per test on a worker)
    group, name = names("g" + tag), names("d" + tag)
    if which == "system group":
        subprocess.run(["groupadd", "--system", group], check=True, capture_output=True)
        gid = grp.getgrnam(group).gr_gid
        assert gid <= 999
        if NssAccounts().uid_to_name(gid) is not None:
            pytest.skip(f"UID {gid} is a local account's here")
        uid = gid
        daemon = ldap_daemon(create_system_accounts=True)
    else:
        gid = uid = free_uid()
        subprocess.run(["groupadd", "--gid", str(gid), group], check=True, capture_output=True)
        daemon = ldap_daemon(create_system_accounts=True, break_glass_group=group)
    try:
        slapd.add_user(name, uid=uid)          # gidNumber = uidNumber = the group's GID
        r = daemon.request("user.add", name=name, mfa=False, system_account=True)
        assert r.exit != 0
        assert f"GID {gid}" in r.message and group in r.message, r.message
        assert account(name) is None
        assert name not in grp.getgrnam(group).gr_mem
    finally:
        subprocess.run(["groupdel", group], capture_output=True)



def shadow(name: str) -> list[str]:
    with open("/etc/shadow", encoding="utf-8") as fh:
        for line in fh:
            if line.split(":", 1)[0] == name:
                return line.rstrip("\n").split(":")
    raise KeyError(name)


def listed(daemon, name: str):
    return next((u for u in daemon.ok("user.list") if u["name"] == name), None)


def test_the_directory_sync_makes_accounts_ahead_and_locks_those_who_leave(
        ldap_daemon, slapd, names):
    """Issue 21: members of mfa_groups/login_groups get their account (the directory's
    identity) and record before any login; one who joins mfa_groups later must enroll;
    one removed from the directory is locked and expired within the sync interval."""
    mfa_group, login_group = names("gm"), names("gl")
    carol, dave, late = names("c"), names("d"), names("x")
    ids = {n: free_uid() for n in (carol, dave)}
    slapd.add_user(carol, uid=ids[carol], shell="/bin/sh")
    slapd.add_user(dave, uid=ids[dave])
    late_uid = free_uid()
    slapd.add_user(late, uid=late_uid)     # in no login group yet
    # (with members: an empty groupOfNames would get the service account)
    slapd.add_group(mfa_group, [carol])
    slapd.add_group(login_group, [dave])
    daemon = ldap_daemon(create_system_accounts=True, mfa_groups=[mfa_group],
                         login_groups=[login_group], admin_groups=[], exempt_groups=[],
                         directory_sync_interval=1)

    # before any login: the accounts, with the directory's identity, and the records
    assert eventually(lambda: account(carol) and account(dave)), "no account made"
    for n in (carol, dave):
        p = pwd.getpwnam(n)
        assert (p.pw_uid, p.pw_gid, p.pw_dir) == (ids[n], ids[n], f"/home/{n}")
    assert pwd.getpwnam(carol).pw_shell == "/bin/sh"
    assert eventually(lambda: listed(daemon, carol) and listed(daemon, dave))
    assert listed(daemon, carol)["mfa"] == "pending"    # mfa_groups: must enroll
    assert listed(daemon, dave)["mfa"] == "off"         # login_groups: password only
    assert account(late) is None and listed(daemon, late) is None

    # joins login_groups (record, MFA off), then mfa_groups: must now enroll
    slapd.add_to_group(login_group, late)
    assert eventually(lambda: listed(daemon, late) and account(late)), "nothing for the joiner"
    assert listed(daemon, late)["mfa"] == "off" and pwd.getpwnam(late).pw_uid == late_uid
    slapd.add_to_group(mfa_group, late)
    assert eventually(lambda: listed(daemon, late)["mfa"] == "pending"), listed(daemon, late)
    assert listed(daemon, late)["days_left"] == 7     # default_enrollment_days

    # removed from the directory: locked and expired within the interval (+ one read)
    assert not shadow(dave)[1].startswith("!")
    slapd.remove_user(dave)
    removed = time.monotonic()
    assert eventually(lambda: shadow(dave)[1].startswith("!"), timeout=10), shadow(dave)
    took = time.monotonic() - removed
    fields = shadow(dave)
    assert fields[7] == "1", fields            # expired on 1970-01-02: no key login either
    assert took < 1 + 4, took           # directory_sync_interval 1 s (+ a read, under load)
    assert listed(daemon, dave)["directory"] == "left"
    assert listed(daemon, carol)["directory"] is None
    print(f"\nremoved from slapd -> account locked and expired in {took:.2f} s")
