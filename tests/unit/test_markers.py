"""Lock markers follow the database (pam_jctotp/store/markers.py, issue 9 item 12).

The shim reads them when the daemon is down and failmode=open. A lock made
while the marker directory could not be written gets its marker at the next
resync (the next marker write, or the daemon's housekeeping); `user remove`
takes a user's marker away.
"""

from __future__ import annotations

from pathlib import Path

from harness import PASSWORD, drive

from pam_jctotp.core import lockout, verbs
from pam_jctotp.core.login import Login
from pam_jctotp.model import LoginRequest, VerdictCode
from pam_jctotp.store.markers import LockMarkers


def _markers(world, path: Path) -> LockMarkers:
    markers = LockMarkers(str(path), lambda: [r.name for r in world.store.list()
                                                 if r.locked_at is not None])
    world.acc.markers = markers
    return markers


def _lock(world, name: str) -> None:
    req = LoginRequest(call="auth", service="sshd", user=name, factors="password,totp")
    for _ in range(2):
        drive(Login(world.acc, req).run(), ["wrong", "000000"], world.directory)
    assert world.store.get(name).locked_at is not None


def present(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def test_a_lock_made_while_the_marker_dir_is_unwritable_gets_its_marker_later(make_world,
                                                                             tmp_path):
    world = make_world(max_attempts=2)
    world.add("alice")
    world.add("bob")
    blocker = tmp_path / "state-ro"
    blocker.write_text("")  # a file where the directory should be: every write fails
    lockdir = blocker / "locked"
    markers = _markers(world, lockdir)
    _lock(world, "alice")
    assert markers.stale
    blocker.unlink()  # the state dir is writable again
    markers.resync()  # the daemon's housekeeping
    assert present(lockdir) == ["alice"] and not markers.stale


def test_the_next_marker_write_catches_up_on_the_ones_that_failed(make_world, tmp_path):
    world = make_world(max_attempts=2)
    world.add("alice")
    world.add("bob")
    blocker = tmp_path / "state-ro"
    blocker.write_text("")
    lockdir = blocker / "locked"
    _markers(world, lockdir)
    _lock(world, "alice")
    blocker.unlink()
    _lock(world, "bob")  # a write path: bob's marker, and alice's that was missing
    assert present(lockdir) == ["alice", "bob"]


def test_resync_removes_markers_of_users_no_longer_locked(make_world, tmp_path):
    world = make_world(max_attempts=2)
    world.add("alice")
    lockdir = tmp_path / "locked"
    lockdir.mkdir()
    (lockdir / "ghost").write_text("")
    markers = _markers(world, lockdir)
    markers.resync()
    assert present(lockdir) == []


def test_user_remove_removes_the_marker(make_world, tmp_path):
    world = make_world(max_attempts=2)
    world.add("alice")
    lockdir = tmp_path / "locked"
    _markers(world, lockdir)
    _lock(world, "alice")
    assert present(lockdir) == ["alice"]
    r = drive(verbs.handle(world.acc, 0, {"v": 1, "verb": "user.remove",
                                          "args": {"name": "alice"}}))
    assert r.end.exit == 0, r.end
    assert present(lockdir) == []


def test_a_locked_login_still_refuses_with_markers_unwritable(make_world, tmp_path):
    world = make_world(max_attempts=2)
    totp = world.add("alice")
    blocker = tmp_path / "state-ro"
    blocker.write_text("")
    _markers(world, blocker / "locked")
    _lock(world, "alice")
    req = LoginRequest(call="auth", service="sshd", user="alice", factors="password,totp")
    r = drive(Login(world.acc, req).run(), ["correct horse battery", world.code(totp)],
              world.directory)
    assert r.code == VerdictCode.MAXTRIES


def _wrong_logins(world, name: str, n: int) -> list[str]:
    req = LoginRequest(call="auth", service="sshd", user=name, factors="password,totp")
    return [drive(Login(world.acc, req).run(), ["wrong", "000000"],
                  world.directory).end.code for _ in range(n)]


def _right_login(world, name: str, totp) -> str:
    req = LoginRequest(call="auth", service="sshd", user=name, factors="password,totp")
    return drive(Login(world.acc, req).run(), [PASSWORD, world.code(totp)],
                 world.directory).end.code


def test_a_limit_lowered_below_the_failures_locks_at_the_next_login(make_world, tmp_path):
    """Issue 20 (a planted bug survived): `user set --max-attempts` below a user's
    current failures. The next login's reservation is refused; that refusal must
    lock (store, audit event, marker), not merely refuse."""
    world = make_world(max_attempts=10)
    totp = world.add("alice")
    lockdir = tmp_path / "locked"
    _markers(world, lockdir)
    assert _wrong_logins(world, "alice", 3) == [VerdictCode.AUTH_ERR] * 3
    assert drive(verbs.handle(world.acc, 0, {"v": 1, "verb": "user.set", "args": {
        "name": "alice", "max_attempts": 2}})).end.exit == 0
    assert _right_login(world, "alice", totp) == VerdictCode.MAXTRIES
    assert world.store.get("alice").locked_at is not None
    assert world.audit_events().count("locked") == 1
    assert present(lockdir) == ["alice"]


def test_a_lock_lifted_by_unlock_after_takes_its_marker_away(make_world, tmp_path):
    """The next login lifts a lock past unlock_after (lockout.begin): the marker
    goes with it, or failmode=open would refuse the user while the daemon is down."""
    world = make_world(max_attempts=2, unlock_after=600)
    totp = world.add("alice")
    lockdir = tmp_path / "locked"
    _markers(world, lockdir)
    _lock(world, "alice")
    assert present(lockdir) == ["alice"]
    world.advance(601)
    assert _right_login(world, "alice", totp) == VerdictCode.SUCCESS
    assert present(lockdir) == []
    assert world.audit_events().count("unlocked") == 1


def test_release_gives_back_only_an_unsettled_attempt(world):
    """lockout.release after failed() or succeeded() changes nothing: a settled
    attempt's count is the store's (a double give-back would erase a failure)."""
    world.add("alice")
    rec = world.store.get("alice")
    attempt = lockout.begin(world.acc, rec)
    assert attempt is not None and not lockout.failed(world.acc, attempt)
    lockout.release(world.acc, attempt)
    assert world.store.get("alice").failed_count == 1
    second = lockout.begin(world.acc, world.store.get("alice"))
    assert second is not None and second.count == 2
    lockout.release(world.acc, second)  # abandoned before any factor: given back
    lockout.release(world.acc, second)  # once
    assert world.store.get("alice").failed_count == 1


def test_joining_an_admin_group_past_five_failures_locks_at_the_next_login(make_world,
                                                                          tmp_path):
    """Admins never get more than 5 attempts: 7 failures as a user, then the group."""
    groups = {"bob": frozenset({"users"})}  # not empty: make_world keeps this very dict
    world = make_world(max_attempts=10, admin_groups=["wheel"], groups=groups)
    totp = world.add("bob")
    lockdir = tmp_path / "locked"
    _markers(world, lockdir)
    assert _wrong_logins(world, "bob", 7) == [VerdictCode.AUTH_ERR] * 7
    groups["bob"] = frozenset({"wheel"})
    assert _right_login(world, "bob", totp) == VerdictCode.MAXTRIES
    assert world.store.get("bob").locked_at is not None
    assert world.audit_events().count("locked") == 1
    assert present(lockdir) == ["bob"]
