"""Enrollment inside the SSH login: the QR code and the key on the client's
terminal, a code computed from that key, and skipping with days left."""

from __future__ import annotations

from sshlib import KEY_RE, Totp, finish

ENROLL_PROMPT = "(Enter to skip): "


def start_enrollment(sshd, name: str, password: str, *, tty: bool = False, command=None):
    sshd.add_user(name, password, enrolled=False)
    sshd.ok(f"jctotp mfa enable {name} --enrollment-days 7")
    return enrollment_login(sshd, name, password, tty=tty, command=command)


def enrollment_login(sshd, name: str, password: str, *, tty: bool = False, command=None):
    """Log in up to the enrollment prompt; returns the child and the screen so far."""
    child = sshd.ssh(name, command, tty=tty)
    child.expect_exact("Directory password: ")
    child.sendline(password)
    child.expect_exact(ENROLL_PROMPT)
    return child, child.before


def test_enroll_in_the_login_then_the_next_login_needs_a_fresh_code(sshd):
    child, screen = start_enrollment(sshd, "fay", "fay-pass-1", command="echo ran-as-$(id -un)")
    assert "7 day(s) left" in screen
    qr_lines = [line for line in screen.splitlines() if line.count("█") >= 10]
    assert len(qr_lines) >= 20, "no QR code drawn on the client's terminal"
    assert "otpauth://totp/" in screen
    key = KEY_RE.search(screen).group(1).replace(" ", "")
    totp = Totp(key)
    code = totp.fresh()
    child.sendline(code)
    child.expect_exact("Press Enter when you have stored them: ")
    assert "recovery codes" in child.before.lower()
    child.sendline("")
    r = finish(child)
    assert r.ok and "ran-as-fay" in r.output, r.output
    assert sshd.show("fay")["mfa"] == "active"

    # Next login: password, then the code prompt (no QR any more).
    assert not sshd.login("fay", "fay-pass-1", code).ok, "enrollment code replayed"
    assert sshd.login("fay", "fay-pass-1", totp.fresh()).ok


def test_wrong_enrollment_code_can_be_retried(sshd):
    child, screen = start_enrollment(sshd, "gus", "gus-pass-1", command="true")
    totp = Totp(KEY_RE.search(screen).group(1).replace(" ", ""))
    child.sendline(totp.wrong())
    child.expect_exact(ENROLL_PROMPT)
    assert "not right" in child.before
    child.sendline(totp.fresh())
    child.expect_exact("Press Enter when you have stored them: ")
    child.sendline("")
    assert finish(child).ok


def test_skip_lets_the_user_in_and_says_how_many_days_are_left(sshd):
    # An interactive session (pty): sshd shows the text that comes after the
    # last prompt as a login message, like the motd.
    child, screen = start_enrollment(sshd, "hal", "hal-pass-1", tty=True)
    key = KEY_RE.search(screen).group(1)
    child.sendline("")
    child.expect_exact("$ ")
    assert "7 day(s) left" in child.before
    child.sendline("echo in-as-$(id -un); exit")
    r = finish(child)
    assert "in-as-hal" in r.output
    assert sshd.show("hal")["mfa"] == "pending"

    # The same key is offered again until enrollment completes.
    child, screen = enrollment_login(sshd, "hal", "hal-pass-1", command="true")
    assert KEY_RE.search(screen).group(1) == key
    child.sendline("")
    assert finish(child).ok



NOW_PROMPT = "Enter the 6-digit code your app shows for the new key: "


def test_enroll_now_shows_the_key_and_enter_does_not_skip(sshd):
    """Issue 11: `mfa enable --enroll-now`: no period, so the next login must enroll."""
    sshd.add_user("ivo", "ivo-pass-1", enrolled=False)
    sshd.ok("jctotp mfa enable ivo --enroll-now")
    assert sshd.show("ivo")["mfa"] == "enroll_now"
    child = sshd.ssh("ivo", "echo ran-as-$(id -un)")
    child.expect_exact("Directory password: ")
    child.sendline("ivo-pass-1")
    child.expect_exact(NOW_PROMPT)
    screen = child.before
    assert "set it up now" in screen and "otpauth://totp/" in screen
    assert "Enter to skip" not in screen
    totp = Totp(KEY_RE.search(screen).group(1).replace(" ", ""))
    child.sendline("")  # Enter: no skipping, the same prompt again
    child.expect_exact(NOW_PROMPT)
    assert "not right" in child.before
    child.sendline(totp.fresh())
    child.expect_exact("Press Enter when you have stored them: ")
    child.sendline("")
    r = finish(child)
    assert r.ok and "ran-as-ivo" in r.output, r.output
    assert sshd.show("ivo")["mfa"] == "active"
