"""su and sudo inside the container go through the same PAM module
(packaging/pam.d/su and sudo): password, then the code."""

from __future__ import annotations

from sshlib import finish


def answer(child, password: str, code: str) -> None:
    child.expect("[Pp]assword")  # sudo shows its own "[sudo] password for x:"
    child.sendline(password)
    child.expect_exact("Verification code: ")
    child.sendline(code)


def test_su_asks_the_target_users_password_and_code(sshd):
    sshd.add_user("kim", "kim-pass-1", enrolled=False)
    totp = sshd.add_user("lee", "lee-pass-1")
    child = sshd.exec_tty("kim", "su lee -c 'echo now-$(id -un)'")
    answer(child, "lee-pass-1", totp.fresh())
    r = finish(child)
    assert r.ok and "now-lee" in r.output, r.output


def test_su_with_a_wrong_code_is_refused(sshd):
    sshd.add_user("max", "max-pass-1", enrolled=False)
    totp = sshd.add_user("ned", "ned-pass-1")
    child = sshd.exec_tty("max", "su ned -c 'echo now-$(id -un)'")
    answer(child, "ned-pass-1", totp.wrong())
    r = finish(child)
    assert not r.ok and "now-ned" not in r.output
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
    child.expect_exact("Sorry, try again.")  # sudo's own retry: give up
    child.sendcontrol("c")
    r = finish(child)
    assert not r.ok and sshd.show("oli")["failed_attempts"] == 1
