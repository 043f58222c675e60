"""Password + code over the real sshd: success, wrong factors, replay."""

from __future__ import annotations

import time

import pytest
from sshlib import finish


def test_password_and_code_run_a_command(sshd):
    totp = sshd.add_user("ann", "ann-pass-1")
    r = sshd.login("ann", "ann-pass-1", totp.fresh(), command="echo $((6 * 7))-$(id -un)")
    assert r.ok, r.output
    assert "42-ann" in r.output


@pytest.mark.parametrize("user, wrong", [("ben", "code"), ("cal", "password")])
def test_a_wrong_code_or_password_is_refused(sshd, user, wrong):
    # A wrong password still gets the code prompt: nothing tells which was wrong.
    password = f"{user}-pass-1"
    totp = sshd.add_user(user, password)
    r = sshd.login(user, "not-the-password" if wrong == "password" else password,
                   totp.wrong() if wrong == "code" else totp.fresh())
    assert not r.ok
    assert "ran-as-" not in r.output
    assert "Permission denied" in r.output


def test_unknown_user_gets_the_same_prompts(sshd):
    # sshd plays a fake conversation for users the system does not know; the
    # daemon shows them what a user of the default state (MFA off) sees: the
    # password prompt alone (issue 9 item 8).
    sshd.add_user("plain", "plain-pass-1", enrolled=False)
    seen = []
    for name in ("plain", "nobody-here"):
        child = sshd.ssh(name, "true")
        child.expect_exact("Directory password: ")
        child.sendline("wrong password")
        r = finish(child)
        assert not r.ok and "Verification code" not in r.output, r.output
        seen.append(r.output.replace(name, "NAME"))
    assert seen[0] == seen[1]


def test_accepted_code_is_refused_on_the_next_login(sshd):
    totp = sshd.add_user("dot", "dot-pass-1")
    code = totp.fresh()
    assert sshd.login("dot", "dot-pass-1", code).ok
    replay = sshd.login("dot", "dot-pass-1", code)
    assert not replay.ok, "the same code was accepted twice"
    # The next time step still works: the refusal was about the code.
    assert sshd.login("dot", "dot-pass-1", totp.fresh()).ok
    assert sshd.show("dot")["locked"] is False


def test_login_wall_time_is_reasonable(sshd):
    totp = sshd.add_user("eve", "eve-pass-1")
    start = time.monotonic()
    assert sshd.login("eve", "eve-pass-1", totp.fresh(), command="true").ok
    assert time.monotonic() - start < 5
