"""Lockout over SSH: refused after max_attempts (3 in the test config), with a
message the user sees, until an admin unlocks."""

from __future__ import annotations


def lock(sshd, name: str, password: str, totp) -> None:
    for _ in range(3):
        assert not sshd.login(name, password, totp.wrong()).ok
    assert sshd.show(name)["locked"] is True


def test_locked_after_the_limit_even_with_the_right_code(sshd):
    totp = sshd.add_user("ivy", "ivy-pass-1")
    lock(sshd, "ivy", "ivy-pass-1", totp)
    r = sshd.login("ivy", "ivy-pass-1", totp.fresh())
    assert not r.ok
    assert "locked" in r.output.lower(), f"no lock message on the client: {r.output!r}"


def test_unlock_keeps_password_and_authenticator(sshd):
    totp = sshd.add_user("jon", "jon-pass-1")
    lock(sshd, "jon", "jon-pass-1", totp)
    sshd.ok("jctotp unlock jon")
    assert sshd.login("jon", "jon-pass-1", totp.fresh()).ok
