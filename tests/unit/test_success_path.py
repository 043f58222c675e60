"""What a login costs the store (issue 15): the writes on the common paths.
Each write is a commit (a WAL append); none is spent on a no-op."""

from __future__ import annotations

from collections import Counter

from harness import drive

from pam_jctotp.core.login import Login
from pam_jctotp.model import LoginRequest, VerdictCode

WRITES = {"expire_lock", "reserve_attempt", "lock_if_exhausted", "lock", "reset_failures",
          "unlock", "accept_step", "release_attempt", "update", "use_recovery_code"}


class Counting:
    """The world's store, counting the calls of its writing methods."""

    def __init__(self, store) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if name in WRITES:
            def counted(*args, **kwargs):
                self.calls[name] += 1
                return attr(*args, **kwargs)
            return counted
        return attr


def code_login(world, user, code):
    counting = Counting(world.acc.store)
    world.acc.store = counting
    try:
        req = LoginRequest(call="auth", service="sshd", user=user, rhost="", tty="ssh",
                           factors="totp")
        run = drive(Login(world.acc, req).run(), [code], world.directory)
    finally:
        world.acc.store = counting._store
    return run, counting.calls


def test_a_right_code_writes_reserve_and_accept_with_reset_only(world):
    totp = world.add("alice")
    world.store.reserve_attempt("alice", world.acc.now(), 300, 5)   # an earlier failure
    run, calls = code_login(world, "alice", world.code(totp))
    assert run.code == VerdictCode.SUCCESS
    # the step's watermark and the counter's reset: one statement (issue 13)
    assert calls == Counter(reserve_attempt=1, accept_step=1)
    assert world.store.get("alice").failed_count == 0


def test_a_wrong_code_below_the_limit_writes_the_reservation_only(world):
    totp = world.add("alice")
    run, calls = code_login(world, "alice", world.wrong(totp))
    assert run.code == VerdictCode.AUTH_ERR
    # below the limit no lock can be due: the attempt that reserved the last
    # slot of the window locks, if it fails
    assert calls == Counter(reserve_attempt=1)


def test_a_replayed_code_is_refused_without_a_step_write(world):
    """A code whose step the login's record already shows as used is a replay:
    refused from the record (last_step only grows), no accept_step statement."""
    totp = world.add("alice")
    code = world.code(totp)
    assert code_login(world, "alice", code)[0].code == VerdictCode.SUCCESS
    run, calls = code_login(world, "alice", code)
    assert run.code == VerdictCode.AUTH_ERR
    assert calls == Counter(reserve_attempt=1)
    assert "replay_refused" in world.audit_events()


def test_the_attempt_that_reserved_the_last_slot_locks(make_world):
    world = make_world(max_attempts=2, unlock_after=0)
    totp = world.add("alice")
    _, first = code_login(world, "alice", world.wrong(totp))
    assert first == Counter(reserve_attempt=1)
    _, second = code_login(world, "alice", world.wrong(totp))
    assert second == Counter(reserve_attempt=1, lock_if_exhausted=1)
    assert world.store.get("alice").locked_at is not None


def test_an_expired_lock_is_still_lifted_by_the_next_login(make_world):
    world = make_world(max_attempts=1, unlock_after=60)
    totp = world.add("alice")
    code_login(world, "alice", world.wrong(totp))
    assert world.store.get("alice").locked_at is not None
    world.advance(61)
    run, calls = code_login(world, "alice", world.code(totp))
    assert run.code == VerdictCode.SUCCESS
    assert calls["expire_lock"] == 1
    assert "unlocked" in world.audit_events()


def test_a_code_login_asks_for_no_groups_when_no_group_is_configured(world, monkeypatch):
    """admin_groups and exempt_groups empty (the default): nothing to compare the
    groups with, so no NSS (or LDAP) lookup on the login path (issue 15)."""
    totp = world.add("alice")
    asked: list[str] = []
    real = world.acc.directory.groups_of
    monkeypatch.setattr(world.acc.directory, "groups_of",
                        lambda name: asked.append(name) or real(name))
    run, _ = code_login(world, "alice", world.code(totp))
    assert run.code == VerdictCode.SUCCESS
    assert asked == []
