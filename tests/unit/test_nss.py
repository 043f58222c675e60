"""The Linux side of users (pam_jctotp/directory/nss.py): groups through NSS initgroups.

Under sssd/LDAP, group enumeration (getgrall) is usually off: a directory
group is found only through initgroups (os.getgrouplist). Such a group must
count for admin_groups and exempt_groups.
"""

from __future__ import annotations

import grp
import os
import pwd

import pytest

from pam_jctotp.directory import nss
from pam_jctotp.directory.local import LocalDirectory
from pam_jctotp.directory.nss import NssAccounts

GIDS = {4000: "staff", 4001: "ldap-admins"}  # ldap-admins: known only to initgroups


@pytest.fixture
def ldap_nss(monkeypatch):
    """NSS as sssd with enumerate=false: getgrall knows nothing of alice's groups."""
    calls = {"getgrouplist": 0}
    alice = pwd.struct_passwd(("alice", "x", 4242, 4000, "", "/home/alice", "/bin/sh"))

    def getpwnam(name):
        if name != "alice":
            raise KeyError(name)
        return alice

    def getgrouplist(name, gid):
        calls["getgrouplist"] += 1
        assert (name, gid) == ("alice", 4000)
        return [4000, 4001, 4999]  # 4999: a gid without a name

    def getgrgid(gid):
        if gid not in GIDS:
            raise KeyError(gid)
        return grp.struct_group((GIDS[gid], "x", gid, []))

    def getgrall():
        raise AssertionError("groups must never be enumerated")

    monkeypatch.setattr(nss.pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(nss.os, "getgrouplist", getgrouplist)
    monkeypatch.setattr(nss.grp, "getgrgid", getgrgid)
    monkeypatch.setattr(nss.grp, "getgrall", getgrall)
    return calls


def test_groups_come_from_initgroups_not_enumeration(ldap_nss):
    assert NssAccounts().groups_of("alice") == frozenset({"staff", "ldap-admins"})
    assert NssAccounts().groups_of("ghost") == frozenset()


def test_a_group_known_only_to_initgroups_counts_for_admin_groups(make_world, ldap_nss):
    world = make_world(admin_groups=["ldap-admins"], max_attempts=9)
    world.add("alice")
    system = NssAccounts()
    world.acc.directory = LocalDirectory(world.store, world.directory.passwords, system)
    record = world.store.get("alice")
    assert world.acc.is_admin(record)
    assert world.acc.limit(record) == 5  # the admin cap, though max_attempts is 9


def test_groups_are_cached_briefly(ldap_nss):
    now = [100.0]
    accounts = NssAccounts(ttl=10, monotonic=lambda: now[0])
    for _ in range(3):
        accounts.groups_of("alice")
    assert ldap_nss["getgrouplist"] == 1
    now[0] += 10
    accounts.groups_of("alice")
    assert ldap_nss["getgrouplist"] == 2


def test_the_real_nss_of_this_host():
    """root's groups by initgroups include its primary group."""
    assert grp.getgrgid(pwd.getpwnam("root").pw_gid).gr_name in nss.lookup_groups("root")
    assert os.getgrouplist("root", 0)  # the call we rely on exists here
