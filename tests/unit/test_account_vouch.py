"""Verdict.account_ok (issue 15): an auth success vouches for the account stage
only when account() would say SUCCESS at that moment. The shim then skips its
account connection, so a wrong vouch would let a login past the account check."""

from __future__ import annotations

import pytest
from harness import PASSWORD, drive

from pam_jctotp.core.login import Login
from pam_jctotp.model import LoginRequest, VerdictCode

SUCCESS = VerdictCode.SUCCESS


def call(world, user, answers=(), *, call="auth", factors="password,totp", rhost=""):
    req = LoginRequest(call=call, service="sshd", user=user, rhost=rhost, tty="ssh",
                       factors=factors, authtok=None, acct_hint=True)
    return drive(Login(world.acc, req).run(), answers, world.directory)


def account_now(world, user):
    return call(world, user, call="acct").code


def test_a_code_login_vouches_and_account_agrees(world):
    totp = world.add("alice")
    r = call(world, "alice", [PASSWORD, world.code(totp)])
    assert r.code == SUCCESS and r.end.account_ok
    assert account_now(world, "alice") == SUCCESS


def test_a_code_only_login_vouches(world):
    totp = world.add("alice")
    r = call(world, "alice", [world.code(totp)], factors="totp")
    assert r.code == SUCCESS and r.end.account_ok


def test_a_password_only_login_vouches(world):
    world.add("paula", mfa="off")
    r = call(world, "paula", [PASSWORD])
    assert r.code == SUCCESS and r.end.account_ok
    assert account_now(world, "paula") == SUCCESS


@pytest.mark.parametrize("mfa, overrides, refused", [
    ("expired", {}, VerdictCode.ACCT_EXPIRED),
    ("off", {"require_mfa_for_all": True}, VerdictCode.PERM_DENIED),
])
def test_an_exempt_success_never_vouches(make_world, mfa, overrides, refused):
    """Exempt users pass auth with the password alone, whatever their MFA state;
    the account stage may still refuse them."""
    world = make_world(exempt_sources=["192.0.2.0/24"], **overrides)
    world.add("eve", mfa=mfa)
    r = call(world, "eve", [PASSWORD], rhost="192.0.2.7")
    assert r.code == SUCCESS and not r.end.account_ok
    assert account_now(world, "eve") == refused


def test_a_skipped_enrollment_does_not_vouch(world):
    world.add("pat", mfa="pending")
    r = call(world, "pat", [PASSWORD, ""])
    assert r.code == SUCCESS and not r.end.account_ok


def test_failures_never_vouch(world):
    totp = world.add("alice")
    r = call(world, "alice", [PASSWORD, world.wrong(totp)])
    assert r.code != SUCCESS and not r.end.account_ok




class RemovedFromLdap:
    """A directory that provisions (like LDAP) and no longer knows anyone."""

    provisions = True
    editable = False

    def __init__(self, inner) -> None:
        self.inner = inner

    def exists(self, name):
        return False

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_code_only_login_through_ldap_does_not_vouch(world):
    """account() asks LDAP whether the user is still there (a removed user's key +
    code must not outlive the LDAP account): auth, which did not ask, cannot vouch."""
    totp = world.add("alice")
    world.acc.directory = RemovedFromLdap(world.acc.directory)
    r = call(world, "alice", [world.code(totp)], factors="totp")
    assert r.code == SUCCESS and not r.end.account_ok
    assert account_now(world, "alice") == VerdictCode.PERM_DENIED
