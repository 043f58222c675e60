"""Issue 21: the directory sync of a fleet host wakes on the fleet's notifications
(directory_sync.py), so a directory user's account appears on every host within
seconds, not at each host's next `directory_sync_interval`.

Two hosts on one private PostgreSQL and one slapd. Host B makes Linux accounts
(`accounts: daemon`) and reads the directory only every hour on its own; host A
makes none (`accounts: nss`: the hosts share this machine's /etc/passwd, so an
account appearing is B's doing). What wakes B is what A writes to the database: a
record of a new member (A's sync, or `jctotp user add` on A), or the fleet's policy
(`jctotp policy set login_groups`)."""

from __future__ import annotations

import json
import time

import pytest
from fleetlib import eventually
from servers.slapd import slapd, slapd_server  # noqa: F401
from testlib import account, free_uid, ldap_directory

pytestmark = [pytest.mark.fleet, pytest.mark.ldap]

HOUR = 3600   # B's own directory_sync_interval: never reached by these tests
WITHIN = 6.0  # seconds: a notification, B's read, a useradd (with room for a loaded CI)


@pytest.fixture
def two_hosts(make_host, slapd):  # noqa: F811
    """two_hosts(a={config}, b={config}): A (no accounts made) and B (makes them,
    reads the directory hourly), B started first and its first read done."""

    def make(group: str, first: str, a: dict, b: dict):
        common = dict(directory=ldap_directory(slapd), mfa_groups=[], admin_groups=[],
                      exempt_groups=[], create_system_accounts=True)
        host_b = make_host("b", **common, **{"login_groups": [group],
                                             "directory_sync_interval": HOUR, **b})
        assert eventually(lambda: account(first)), "B's first read made no account"
        host_a = make_host("a", **common, accounts="nss", **a)
        return host_a, host_b

    return make


def appears(name: str, uid: int) -> float:
    """Seconds until B made `name`'s account, with the directory's UID."""
    start = time.monotonic()
    assert eventually(lambda: account(name), timeout=WITHIN + 10), f"{name}: no account on B"
    took = time.monotonic() - start
    made = account(name)
    assert made is not None and (made.pw_uid, made.pw_gid) == (uid, uid)
    return took


def test_a_member_as_sync_saw_first_is_on_b_within_seconds(
        two_hosts, slapd, scratch_accounts):  # noqa: F811
    group, first, late = (f"{scratch_accounts}{t}" for t in ("g", "f", "l"))
    slapd.add_user(first, uid=free_uid())
    slapd.add_group(group, [first])
    a, b = two_hosts(group, first, a={"login_groups": [group], "directory_sync_interval": 1},
                     b={})
    uid = free_uid()
    slapd.add_user(late, uid=uid)
    slapd.add_to_group(group, late)          # A's next read makes late's record
    took = appears(late, uid)
    assert took < WITHIN, took
    made = {tag: [e["user"] for e in h.audit_events() if e["event"] == "user_provisioned"]
            for tag, h in (("a", a), ("b", b))}
    assert late in made["a"] and late not in made["b"], made   # A's record woke B's read
    print(f"\njoined the group in slapd -> account on B in {took:.2f} s")


def test_user_add_on_a_is_on_b_within_seconds(two_hosts, slapd, scratch_accounts):  # noqa: F811
    group, first, added = (f"{scratch_accounts}{t}" for t in ("g", "f", "u"))
    slapd.add_user(first, uid=free_uid())
    slapd.add_group(group, [first])
    a, b = two_hosts(group, first, a={"directory_sync_interval": 0}, b={})
    uid = free_uid()
    slapd.add_user(added, uid=uid)
    slapd.add_to_group(group, added)         # B has not read it: its next read is in an hour
    time.sleep(1)
    assert account(added) is None
    a.ok("user.add", name=added, mfa=False, system_account=False)
    took = appears(added, uid)
    assert took < WITHIN, took
    print(f"\nuser add on A -> account on B in {took:.2f} s")


def test_policy_set_login_groups_on_a_reaches_bs_accounts_within_seconds(
        two_hosts, slapd, scratch_accounts):  # noqa: F811
    """A login group added to the fleet's policy: every host's sync reads at once, not
    at its next interval (no record changes: the policy's notification wakes it)."""
    group, other, first, member = (f"{scratch_accounts}{t}" for t in ("g", "h", "f", "m"))
    slapd.add_user(first, uid=free_uid())
    slapd.add_group(group, [first])
    uid = free_uid()
    slapd.add_user(member, uid=uid)
    slapd.add_group(other, [member])
    a, b = two_hosts(group, first, a={"directory_sync_interval": HOUR}, b={})
    time.sleep(1)
    assert account(member) is None
    done = a.cli("policy", "set", "login_groups", json.dumps([group, other]))
    assert done.returncode == 0, done.stderr
    took = appears(member, uid)
    assert took < WITHIN, took
    print(f"\npolicy set login_groups on A -> account on B in {took:.2f} s")
    assert b.user(member)["mfa"] == "off"    # and its record, made by a sync
