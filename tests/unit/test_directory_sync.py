"""Issue 21: the directory sync's pieces that need no directory (directory_sync.py):
what wakes it in a fleet, and doctor's NSS check with `accounts: nss`."""

from __future__ import annotations

from types import SimpleNamespace

from pam_jctotp.directory import Identity
from pam_jctotp.directory_sync import DirectorySync, nss_findings


def member(uid: int | None = None):
    return SimpleNamespace(groups=frozenset({"staff"}),
                           identity=Identity(uid, uid) if uid is not None else None)


def rows(*names: str) -> list:
    return [SimpleNamespace(name=n) for n in names]


def test_a_record_of_a_name_the_last_read_did_not_see_wakes_the_sync():
    acc = SimpleNamespace(departed={"bob": "no login group"})
    sync = DirectorySync(acc, None, None, 300)   # type: ignore[arg-type]
    sync.members = {"alice": member()}
    sync.on_fleet_rows(rows("alice", "new"))
    assert not sync._wake.is_set()               # the first read is still under way
    sync.synced.set()
    sync.on_fleet_rows(rows("alice", "bob"))     # locks, codes: nothing new
    assert not sync._wake.is_set()
    sync.on_fleet_rows(rows("alice", "bob", "new"))   # another host's new record
    assert sync._wake.is_set()


def test_nss_findings_fail_for_a_name_nss_does_not_know_and_warn_for_another_uid():
    assert nss_findings({"root": member(0)})[0][0] == "ok"
    [(level, text)] = nss_findings({"root": member(0), "jc-no-such-user": member(4242)})
    assert level == "fail" and "jc-no-such-user" in text and "sshd will refuse" in text
    [(level, text)] = nss_findings({"root": member(4242)})
    assert level == "warn" and "UID 0" in text and "4242" in text
    assert nss_findings({})[0][0] == "warn"


def test_new_login_groups_wake_the_sync_and_the_same_ones_do_not():
    """A reload or `jctotp policy set login_groups` (daemon/build.swap) reads at once."""
    sync = DirectorySync(SimpleNamespace(), None, None, 300)   # type: ignore[arg-type]
    sync.groups = ("staff",)
    sync.config_changed(SimpleNamespace(login_group_keys=("staff",)))   # type: ignore[arg-type]
    assert not sync._wake.is_set()
    sync.config_changed(SimpleNamespace(login_group_keys=("staff", "ops")))  # type: ignore[arg-type]
    assert sync._wake.is_set()
