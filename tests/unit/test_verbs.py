"""CLI verbs, sans I/O: pam_jctotp/core/verbs*.py driven by harness.drive."""

from __future__ import annotations

import pwd
from pathlib import Path

import pyotp
import pytest
from harness import PASSWORD, Run, drive

from pam_jctotp.core import verbs as control
from pam_jctotp.core.steps import Result
from pam_jctotp.errors import NotFound, PermissionDenied, StoreError, UsageError
from pam_jctotp.model import MfaState

NOBODY = 65534
ADMIN_ARGS = {  # well-formed arguments, so that only the caller is wrong
    "user.add": {"name": "zed", "system_account": False}, "user.list": {},
    "user.show": {"name": "alice"}, "user.set": {"name": "alice", "max_attempts": 3},
    "user.remove": {"name": "alice"}, "mfa.enable": {"names": ["alice"]},
    "mfa.reset": {"names": ["alice"]}, "mfa.disable": {"names": ["alice"]},
    "unlock": {"names": ["alice"]}, "passwd.admin": {"name": "alice", "password": "x" * 12},
    "audit": {}, "clock.set": {"offset": 30}, "doctor": {},
    "user.resend-email": {"name": "alice"},
    "policy.show": {}, "policy.set": {"key": "max_attempts", "value": 3},
    "break-glass.admin": {"name": "alice"},
}


def request(world, uid: int, verb: str, answers=(), **args) -> Run:
    return drive(control.handle(world.acc, uid, {"v": 1, "verb": verb, "args": args}),
                 answers, world.directory)


def admin(world, verb: str, answers=(), **args) -> Result:
    end = request(world, 0, verb, answers, **args).end
    assert isinstance(end, Result)
    return end


def snapshot(world):
    return ([r for r in world.store.list()],
            {r.name: world.store.recovery_codes_left(r.name) for r in world.store.list()})


@pytest.fixture
def users(world):
    world.add("alice")
    world.add("bob", mfa="off")
    world.add("carol", mfa="pending")
    return world


# --- who may ask --------------------------------------------------------------------

def test_the_table_covers_every_admin_verb():
    assert set(ADMIN_ARGS) == set(control.ADMIN_VERBS)


@pytest.mark.parametrize("verb", sorted(control.ADMIN_VERBS))
@pytest.mark.parametrize("uid", [1, 1000, NOBODY])
def test_admin_verbs_need_root(users, verb, uid):
    before = snapshot(users)
    offset = users.clock.offset
    with pytest.raises(PermissionDenied, match="root"):
        request(users, uid, verb, **ADMIN_ARGS[verb])
    assert snapshot(users) == before and users.clock.offset == offset


@pytest.mark.parametrize("request_", [{"verb": "user.list"}, {"v": 2, "verb": "user.list"},
                                      {"v": 1}, {"v": 1, "verb": 5},
                                      {"v": 1, "verb": "user.list", "args": "x"},
                                      {"v": 1, "verb": "rm -rf"}])
def test_malformed_requests(world, request_):
    with pytest.raises(UsageError):
        control.handle(world.acc, 0, request_)


@pytest.fixture
def nobody(users):
    assert pwd.getpwuid(NOBODY).pw_name == "nobody"
    users.add("nobody")
    return users


def test_self_verbs_act_on_the_callers_own_name(nobody):
    for args in ({}, {"name": "alice"}, {"names": ["alice"]}, {"user": "alice"}):
        result = request(nobody, NOBODY, "status", **args).end
        assert result.exit == 0 and result.data["name"] == "nobody"


def test_self_verbs_for_a_uid_outside_the_directory(users):
    with pytest.raises(NotFound, match="uid 65534"):
        request(users, NOBODY, "status")
    with pytest.raises(NotFound):
        request(users, 2**31 - 2, "status")  # a uid no system user has


def test_self_recovery_codes_need_the_callers_own_code(nobody):
    totp = pyotp.TOTP(nobody.acc.active_secret(nobody.store.get("nobody")).reveal())
    r = request(nobody, NOBODY, "recovery-codes", [nobody.code(totp), ""])
    assert r.end.exit == 0
    assert r.end.data == {"changed": True, "recovery_codes": nobody.config.recovery_codes}
    before = snapshot(nobody)
    r = request(nobody, NOBODY, "recovery-codes", [nobody.wrong(totp)])
    assert r.end.exit == 1 and r.end.delay
    records, left = snapshot(nobody)
    assert left == before[1]
    assert [r.failed_count for r in records if r.name == "nobody"] == [1]


def test_self_setup_for_a_pending_user(users):
    users.add("nobody", mfa="pending")

    def phone(prompt, steps):
        text = next(s.text for s in steps if hasattr(s, "text") and "URI: " in s.text)
        return users.code(pyotp.parse_uri(text.split("URI: ", 1)[1].split("\n", 1)[0]))

    r = request(users, NOBODY, "setup", phone)
    assert r.end.exit == 0
    assert users.acc.state(users.store.get("nobody")) is MfaState.ACTIVE


# --- enrollment days -------------------------------------------------------------------

@pytest.mark.parametrize("verb", ["mfa.enable", "mfa.reset"])
@pytest.mark.parametrize("days", [0, -1, 366, "x", "7", 7.0, True, [7]])
def test_bad_enrollment_days_change_nothing(users, verb, days):
    before = snapshot(users)
    with pytest.raises(UsageError, match="enrollment|enrollment_days"):
        admin(users, verb, names=["alice", "bob", "carol"], enrollment_days=days)
    assert snapshot(users) == before


@pytest.mark.parametrize("days", [1, 365])
def test_enrollment_days_bounds(users, days):
    assert admin(users, "mfa.enable", names=["bob"], enrollment_days=days).exit == 0
    assert users.acc.days_left(users.store.get("bob")) == days


def test_enrollment_days_default_from_the_config(users):
    admin(users, "mfa.reset", names=["alice"])
    record = users.store.get("alice")
    assert users.acc.days_left(record) == users.config.default_enrollment_days
    assert record.totp_secret is None and users.store.recovery_codes_left("alice") == 0


# --- names ----------------------------------------------------------------------------------

BULK = ["mfa.enable", "mfa.reset", "mfa.disable", "unlock"]


@pytest.mark.parametrize("verb", BULK)
@pytest.mark.parametrize("names", [[], [""], ["alice", ""], ["  "], ["alice", None],
                                   ["alice", 5], "alice", None])
def test_empty_or_malformed_names_change_nothing(users, verb, names):
    users.store.update("alice", locked_at=users.now(), lock_reason="test")
    before = snapshot(users)
    with pytest.raises(UsageError):
        admin(users, verb, names=names)
    assert snapshot(users) == before


@pytest.mark.parametrize("verb", BULK)
@pytest.mark.parametrize("names", [["ghost"], ["alice", "ghost", "bob"], ["alice", "bob", "ghost"]])
def test_one_unknown_name_changes_none(users, verb, names):
    users.store.update("alice", locked_at=users.now(), lock_reason="test")
    users.store.update("bob", locked_at=users.now(), lock_reason="test")
    before = snapshot(users)
    with pytest.raises(NotFound, match="ghost"):
        admin(users, verb, names=names)
    assert snapshot(users) == before


@pytest.mark.parametrize("verb, args", [
    ("user.show", {"name": "ghost"}), ("user.set", {"name": "ghost", "max_attempts": 3}),
    ("user.remove", {"name": "ghost"}), ("passwd.admin", {"name": "ghost", "password": "x" * 12}),
])
def test_single_name_verbs_on_an_unknown_user(users, verb, args):
    before = snapshot(users)
    with pytest.raises(NotFound):
        admin(users, verb, **args)
    assert snapshot(users) == before


@pytest.mark.parametrize("verb, args", [
    ("user.show", {}), ("user.show", {"name": ""}), ("user.remove", {"name": None}),
    ("user.add", {"name": "Bad Name", "system_account": False}),
    ("user.add", {"name": "mallory\n", "system_account": False}),  # issue 9 item 10
    ("user.add", {"name": "mallory$\n", "system_account": False}),
    ("user.add", {"name": "", "system_account": False}),
    ("user.add", {"name": "alice", "system_account": False}),
    ("user.add", {"name": "zed", "password": "short", "system_account": False}),
    ("user.set", {"name": "alice"}), ("user.set", {"name": "alice", "max_attempts": 0}),
    ("user.set", {"name": "alice", "max_attempts": True}),
    ("passwd.admin", {"name": "alice", "password": "a\nb" * 4}),
])
def test_usage_errors_change_nothing(users, verb, args):
    before = snapshot(users)
    with pytest.raises(UsageError):
        admin(users, verb, **args)
    assert snapshot(users) == before


# --- what the admin verbs do -----------------------------------------------------------

def test_bulk_verbs_act_on_every_name(users):
    assert admin(users, "mfa.enable", names=["bob", "carol"], enrollment_days=3).exit == 0
    assert users.acc.state(users.store.get("bob")) is MfaState.PENDING
    for name in ("alice", "bob"):
        users.store.update(name, locked_at=users.now(), lock_reason="test")
    admin(users, "unlock", names=["alice", "bob"])
    assert all(r.locked_at is None for r in users.store.list())
    admin(users, "mfa.disable", names=["alice", "carol"])
    assert {r.name: users.acc.state(r) for r in users.store.list()} == {
        "alice": MfaState.OFF, "bob": MfaState.PENDING, "carol": MfaState.OFF}


def test_unlock_keeps_the_password_and_the_authenticator(users):
    before = users.store.get("alice")
    users.store.update("alice", locked_at=users.now(), lock_reason="test")
    admin(users, "unlock", names=["alice"])
    after = users.store.get("alice")
    assert (after.password_hash, after.totp_secret) == (before.password_hash, before.totp_secret)


def test_user_add_with_mfa_hands_over_a_working_uri(world):
    result = admin(world, "user.add", name="zed", password=PASSWORD, mfa=True,
                   system_account=False)
    totp = pyotp.parse_uri(result.data["otpauth_uri"])
    record = world.store.get("zed")
    assert world.acc.active_secret(record).reveal() == totp.secret
    assert len(result.data["recovery_codes"]) == world.config.recovery_codes


def test_admin_password_reset_of_another_admin_resets_their_totp(world):
    world.add("root2", admin=True)
    result = admin(world, "passwd.admin", name="root2", password="new password 1")
    assert result.exit == 0 and "reset too" in result.message
    # issue 11: no grace for an admin: the next login must enroll
    assert world.acc.state(world.store.get("root2")) is MfaState.ENROLL_NOW


def test_clock_set_needs_a_controllable_clock(world):
    assert admin(world, "clock.set", offset=60).exit == 0
    world.clock.controllable = False
    with pytest.raises(PermissionDenied):
        admin(world, "clock.set", offset=0)
    with pytest.raises(UsageError):
        admin(world, "clock.set", offset="60")



# --- reads never write (issue 10) ----------------------------------------------------------

def state_of(world):
    """Everything a read could change: every row, every code count, the audit log."""
    audit = Path(world.config.audit_log)
    return snapshot(world), audit.read_bytes() if audit.exists() else b""


def test_show_and_list_agree_on_an_expired_lock_and_neither_writes(users):
    users.store.reserve_attempt("alice", users.now(), users.config.fail_interval, 5)
    users.store.update("alice", locked_at=users.now(), lock_reason="too many attempts")
    users.advance(users.config.unlock_after + 1)  # the lock has run out, nobody lifted it
    before = state_of(users)
    shown = admin(users, "user.show", name="alice").data
    listed = next(u for u in admin(users, "user.list").data if u["name"] == "alice")
    assert shown == listed
    assert shown["locked"] is False and shown["locked_until"] is None
    assert shown["failed_attempts"] == 0 and shown["attempts_left"] == shown["max_attempts"]
    assert state_of(users) == before  # no unlock written, no "unlocked" audited
    assert users.store.get("alice").locked_at is not None


def test_show_and_list_agree_on_a_live_lock(users):
    users.store.update("alice", locked_at=users.now(), lock_reason="too many attempts")
    users.advance(users.config.unlock_after - 60)
    before = state_of(users)
    shown = admin(users, "user.show", name="alice").data
    listed = next(u for u in admin(users, "user.list").data if u["name"] == "alice")
    assert shown == listed and shown["locked"] is True and shown["attempts_left"] == 0
    assert state_of(users) == before


def test_status_of_an_expired_lock_does_not_write_either(nobody):
    nobody.store.update("nobody", locked_at=nobody.now(), lock_reason="too many attempts")
    nobody.advance(nobody.config.unlock_after)
    before = state_of(nobody)
    assert request(nobody, NOBODY, "status").end.data["locked"] is False
    assert state_of(nobody) == before


# --- a password change drops a pending enrollment key (issue 9 item 6) -----------------

def pending_key(world, name):
    return world.store.get(name).pending_secret


def test_admin_passwd_discards_the_pending_key(users):
    record = users.store.get("carol")
    users.acc.pending_key(record)  # shown at a login: now stored
    assert pending_key(users, "carol") is not None
    assert admin(users, "passwd.admin", name="carol", password="new password 1").exit == 0
    assert pending_key(users, "carol") is None
    assert users.acc.state(users.store.get("carol")) is MfaState.PENDING  # period unchanged


def test_self_passwd_discards_the_pending_key(users):
    users.add("nobody", mfa="pending")
    users.acc.pending_key(users.store.get("nobody"))
    r = request(users, NOBODY, "passwd", [PASSWORD, "new password 1", "new password 1"])
    assert r.end.exit == 0
    assert pending_key(users, "nobody") is None


def test_doctor_reports_the_directorys_own_checks(world, monkeypatch):
    assert admin(world, "doctor").data["directory"] == []
    assert admin(world, "doctor").data["directory_kind"].startswith("local")
    assert admin(world, "doctor", user="nosuchuser").data["directory"] == [
        "local directory: no user 'nosuchuser'"]
    assert [level for level, _ in admin(world, "doctor").data["store"]] == ["ok"]

    def broken():
        raise StoreError("state database error: disk I/O error")

    monkeypatch.setattr(world.store, "list", broken)
    problems = admin(world, "doctor").data["directory"]
    assert problems == ["local directory: state database error: disk I/O error"]


def test_break_glass_without_ldap_and_a_break_glass_group_changes_nothing(users):
    """`jctotp break-glass` writes a verifier only where one can be used (LDAP and
    break_glass_group, tests/ldap/test_ldap_break_glass.py): elsewhere it asks nothing."""
    before = snapshot(users)
    end = admin(users, "break-glass.admin", name="alice")
    assert end.exit == 1 and "keeps no break-glass password verifiers" in end.message
    assert snapshot(users) == before
