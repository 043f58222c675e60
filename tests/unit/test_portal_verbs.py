"""The User Portal's daemon verbs (core/verbs_portal.py), sans I/O (issue 23)."""

from __future__ import annotations

import re

import pyotp
import pytest
from harness import PASSWORD, Mails, drive

from pam_jctotp.core import verbs as control
from pam_jctotp.core.login import Login
from pam_jctotp.core.steps import Result
from pam_jctotp.errors import JctotpError, PermissionDenied
from pam_jctotp.model import ExitCode, LoginRequest, MfaState
from pam_jctotp.secret import Secret

NOBODY = 65534
ADDR = "192.0.2.7"


def call(world, verb: str, uid: int = 0, **args) -> Result:
    args.setdefault("address", ADDR)
    try:
        end = drive(control.handle(world.acc, uid, {"v": 1, "verb": verb, "args": args}),
                    (), world.directory).end
    except JctotpError as exc:  # what the transport answers for these
        return Result(exc.exit_code, str(exc))
    assert isinstance(end, Result)
    return end


def signed_in(world, totp, name="alice") -> str:
    r = call(world, "portal.signin", name=name, password=PASSWORD)
    assert r.exit == ExitCode.OK, r
    token = r.data["session"]
    if totp is not None:
        assert r.data["next"] == "code"
        assert call(world, "portal.code", session=token, code=world.code(totp)).exit == 0
    return token


@pytest.fixture
def mails(world):
    world.acc.outbox = Mails()
    return world.acc.outbox


def test_only_the_portal_user_or_root_may_call(world):
    world.add("alice")
    with pytest.raises(PermissionDenied):
        control.handle(world.acc, NOBODY, {"v": 1, "verb": "portal.signin", "args": {}})
    world.acc.config = world.config.__class__(**{**world.config.__dict__,
                                                 "portal": world.config.portal.__class__(
                                                     user="nobody")})
    conv = control.handle(world.acc, NOBODY, {"v": 1, "verb": "portal.status", "args": {}})
    conv.close()


def test_signin_with_code_then_status(world):
    totp = world.add("alice")
    token = signed_in(world, totp)
    r = call(world, "portal.status", session=token)
    assert r.data["name"] == "alice" and r.data["mfa"] == "active"
    assert r.data["fresh_code"] is True
    assert r.data["last_logins"][0]["event"] == "login_ok"
    assert r.data["last_logins"][0]["rhost"] == ADDR


def test_session_before_the_code_can_do_nothing(world):
    world.add("alice")
    r = call(world, "portal.signin", name="alice", password=PASSWORD)
    assert call(world, "portal.status", session=r.data["session"]).exit == ExitCode.PERMISSION


def test_wrong_code_ends_the_half_session_and_counts(world):
    totp = world.add("alice")
    r = call(world, "portal.signin", name="alice", password=PASSWORD)
    bad = call(world, "portal.code", session=r.data["session"], code=world.wrong(totp))
    assert bad.exit == ExitCode.REFUSED and bad.delay
    assert world.store.get("alice").failed_count == 1
    # one code per password: the session is gone
    again = call(world, "portal.code", session=r.data["session"], code=world.code(totp))
    assert again.exit == ExitCode.PERMISSION


def test_portal_and_ssh_share_one_counter(world):
    """Guesses on the portal and over SSH lock at max_attempts together."""
    totp = world.add("alice")
    for _ in range(3):
        r = call(world, "portal.signin", name="alice", password=PASSWORD)
        call(world, "portal.code", session=r.data["session"], code=world.wrong(totp))
    for _ in range(2):
        run = drive(Login(world.acc, LoginRequest("auth", "sshd", "alice")).run(),
                    [PASSWORD, world.wrong(totp)], world.directory)
        assert run.code in ("AUTH_ERR", "MAXTRIES")
    assert world.acc.is_locked(world.store.get("alice"))
    r = call(world, "portal.signin", name="alice", password=PASSWORD)
    assert r.exit == ExitCode.LOCKED


def test_wrong_password_and_unknown_name_answer_alike(world):
    world.add("alice")
    a = call(world, "portal.signin", name="alice", password="wrong password")
    b = call(world, "portal.signin", name="nosuchuser", password="wrong password")
    assert (a.exit, a.message, a.delay) == (b.exit, b.message, b.delay)
    assert world.store.get("alice").failed_count == 1


def test_per_address_rate_limit(world):
    world.add("alice", mfa="off")
    limit = world.config.portal.signins_per_minute
    for _ in range(limit):
        assert call(world, "portal.signin", name="alice", password=PASSWORD).exit == 0
    r = call(world, "portal.signin", name="alice", password=PASSWORD)
    assert r.exit == ExitCode.REFUSED and r.data == {"rate_limited": True}
    assert call(world, "portal.signin", name="alice", password=PASSWORD,
                address="192.0.2.8").exit == 0
    world.advance(61)
    assert call(world, "portal.signin", name="alice", password=PASSWORD).exit == 0


def test_enrollment_in_the_period(world):
    world.add("carol", mfa="pending")
    r = call(world, "portal.signin", name="carol", password=PASSWORD)
    assert r.data["next"] == "enroll"
    token = r.data["session"]
    key = call(world, "portal.enroll", session=token).data
    assert re.fullmatch(r"([A-Z2-7]{4} )*[A-Z2-7]{1,4}", key["key"])
    totp = pyotp.TOTP(key["key"].replace(" ", ""))
    assert call(world, "portal.confirm", session=token, code=world.wrong(totp)).exit == 1
    ok = call(world, "portal.confirm", session=token, code=world.code(totp))
    assert ok.exit == 0 and len(ok.data["recovery_codes"]) == world.config.recovery_codes
    assert world.acc.state(world.store.get("carol")) is MfaState.ACTIVE


def test_factor_changes_need_a_fresh_code(world):
    totp = world.add("alice")
    token = signed_in(world, totp)
    world.advance(301)
    for verb, extra in (("portal.enroll", {}), ("portal.recovery-codes", {}),
                        ("portal.passwd", {"password": PASSWORD,
                                           "new_password": "another password"})):
        r = call(world, verb, session=token, **extra)
        assert r.exit == ExitCode.REFUSED and r.data == {"need_code": True}, verb
    assert call(world, "portal.prove", session=token, code=world.code(totp)).exit == 0
    r = call(world, "portal.recovery-codes", session=token)
    assert r.exit == 0 and len(r.data["recovery_codes"]) == world.config.recovery_codes


def test_reset_to_a_new_phone_keeps_the_old_key_until_confirmed(world):
    old = world.add("alice")
    token = signed_in(world, old)
    new_key = call(world, "portal.enroll", session=token).data
    assert new_key["reset"] is True
    new = pyotp.TOTP(new_key["key"].replace(" ", ""))
    # not confirmed yet: the old key still signs in (a later step: no replay)
    world.advance(30)
    signed_in(world, old)
    world.advance(30)
    assert call(world, "portal.confirm", session=token, code=world.code(new)).exit == 0
    world.advance(30)
    r = call(world, "portal.signin", name="alice", password=PASSWORD)
    assert call(world, "portal.code", session=r.data["session"],
                code=world.code(old)).exit == ExitCode.REFUSED


def test_password_change_and_mail(world, mails):
    totp = world.add("alice")
    world.store.update("alice", email="alice@example.org")
    token = signed_in(world, totp)
    r = call(world, "portal.passwd", session=token, password=PASSWORD,
             new_password="a new long password")
    assert r.exit == 0
    assert world.directory.verify_password("alice", Secret("a new long password"))
    assert [m[0] for m in mails.sent] == ["password_changed"]


def test_signout_kills_the_session(world):
    world.add("bob", mfa="off")
    token = signed_in(world, None, "bob")
    call(world, "portal.signout", session=token)
    assert call(world, "portal.status", session=token).exit == ExitCode.PERMISSION


def test_idle_and_absolute_lifetime(world):
    world.add("bob", mfa="off")
    token = signed_in(world, None, "bob")
    world.advance(world.config.portal.session_idle_minutes * 60 + 1)
    assert call(world, "portal.status", session=token).exit == ExitCode.PERMISSION
    token = signed_in(world, None, "bob")
    for _ in range(world.config.portal.session_lifetime_minutes // 10 + 1):
        world.advance(600)
        r = call(world, "portal.status", session=token)
    assert r.exit == ExitCode.PERMISSION


def _reset_link(mails) -> str:
    template, _, fields = mails.sent[-1]
    assert template == "password_reset"
    return str(fields["link"]).rsplit("/", 1)[1]


def test_forgotten_password_flow(world, mails):
    totp = world.add("alice")
    world.store.update("alice", email="alice@example.org")
    known = call(world, "portal.forgot", login="alice@example.org")
    unknown = call(world, "portal.forgot", login="nobody@example.org")
    no_mail = call(world, "portal.forgot", login="ghost")
    assert known.message == unknown.message == no_mail.message and known.exit == 0
    assert len(mails.sent) == 1
    token = _reset_link(mails)
    assert call(world, "portal.reset-check", token=token).data == {"needs_code": True}
    bad = call(world, "portal.reset", token=token, code=world.wrong(totp),
               new_password="brand new password")
    assert bad.exit == ExitCode.REFUSED and world.store.get("alice").failed_count == 1
    ok = call(world, "portal.reset", token=token, code=world.code(totp),
              new_password="brand new password")
    assert ok.exit == 0
    world.advance(30)
    again = call(world, "portal.reset", token=token, code=world.code(totp),
                 new_password="another new password")
    assert again.exit == ExitCode.REFUSED and "not valid" in again.message


def test_reset_link_expires(world, mails):
    world.add("bob", mfa="off")
    world.store.update("bob", email="bob@example.org")
    call(world, "portal.forgot", login="bob")
    token = _reset_link(mails)
    world.advance(world.config.password_reset_minutes * 60 + 1)
    r = call(world, "portal.reset", token=token, new_password="brand new password")
    assert r.exit == ExitCode.REFUSED and "not valid" in r.message


def test_a_newer_link_voids_the_older(world, mails):
    world.add("bob", mfa="off")
    world.store.update("bob", email="bob@example.org")
    call(world, "portal.forgot", login="bob")
    first = _reset_link(mails)
    call(world, "portal.forgot", login="bob")
    assert call(world, "portal.reset-check", token=first).exit == ExitCode.REFUSED


def test_tokens_are_kept_hashed(world, mails):
    totp = world.add("alice")
    world.store.update("alice", email="alice@example.org")
    token = signed_in(world, totp)
    call(world, "portal.forgot", login="alice")
    link = _reset_link(mails)
    assert token not in world.acc.portal.sessions and link not in world.acc.portal.resets


def test_expired_and_mfa_for_all_are_refused_as_over_ssh(make_world):
    world = make_world(require_mfa_for_all=True)
    world.add("bob", mfa="off")
    world.add("dan", mfa="expired")
    for name in ("bob", "dan"):
        r = call(world, "portal.signin", name=name, password=PASSWORD)
        assert r.exit == ExitCode.REFUSED and r.data is None, name
        assert world.store.get(name).failed_count == 0   # the password was right
