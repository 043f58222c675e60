"""su and sudo inside the container go through the same PAM module
(packaging/pam.d/su and sudo): password, then the code."""

from __future__ import annotations

import pytest
from sshlib import finish


def answer(child, password: str, code: str) -> None:
    child.expect("[Pp]assword")  # sudo shows its own "[sudo] password for x:"
    child.sendline(password)
    child.expect_exact("Verification code: ")
    child.sendline(code)


@pytest.mark.parametrize("good", [True, False])
def test_su_asks_the_target_users_password_and_code(sshd, good):
    me, target = ("kim", "lee") if good else ("max", "ned")
    sshd.add_user(me, f"{me}-pass-1", enrolled=False)
    totp = sshd.add_user(target, f"{target}-pass-1")
    child = sshd.exec_tty(me, f"su {target} -c 'echo now-$(id -un)'")
    answer(child, f"{target}-pass-1", totp.fresh() if good else totp.wrong())
    r = finish(child)
    assert r.ok == good, r.output
    assert (f"now-{target}" in r.output) == good
    if not good:
        assert "Authentication failure" in r.output


def test_sudo_asks_the_invoking_users_password_and_code(sshd):
    totp = sshd.add_user("oli", "oli-pass-1")
    sshd.ok("usermod -aG sudo oli")
    child = sshd.exec_tty("oli", "sudo -k; sudo id -u")
    answer(child, "oli-pass-1", totp.fresh())
    r = finish(child)
    assert r.ok and r.output.strip().splitlines()[-1] == "0", r.output

    child = sshd.exec_tty("oli", "sudo -k; sudo id -u")
    answer(child, "oli-pass-1", totp.wrong())
    child.expect_exact("Sorry, try again.")  # sudo's own retry: give up at its prompt
    child.expect("[Pp]assword")
    child.sendcontrol("c")
    r = finish(child)
    assert not r.ok and sshd.show("oli")["failed_attempts"] == 1
