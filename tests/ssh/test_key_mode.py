"""Key + code (sshd_config.d/jctotp-key.conf, pam.d/sshd-key with
factors=totp), and the account stack refusing a locked user whatever the
authentication method."""

from __future__ import annotations

import subprocess

import pytest
from sshlib import finish

KEYONLY_MATCH = "Match User keyonly\n    AuthenticationMethods publickey\n"


@pytest.fixture(scope="module")
def key_sshd(fresh_sshd, tmp_path_factory):
    s = fresh_sshd("key")
    # One user with a key-only login (a config an admin might add for a
    # robot): only the PAM account stack stands between a lock and a shell.
    s.ok(f"printf '{KEYONLY_MATCH}' > /etc/ssh/sshd_config.d/99-test-keyonly.conf && kill -HUP 1")
    s.wait_listening()
    key = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    s.key = key
    return s


def add_key_user(s, name: str, password: str):
    totp = s.add_user(name, password)
    pub = s.key.with_suffix(".pub").read_text()
    s.ok(f"install -d -o {name} -m 700 ~{name}/.ssh && "
         f"install -o {name} -m 600 /dev/stdin ~{name}/.ssh/authorized_keys", stdin=pub)
    return totp


def test_key_then_code(key_sshd):
    totp = add_key_user(key_sshd, "pam", "pam-pass-1")
    r = key_sshd.login("pam", None, totp.fresh(), key=key_sshd.key)
    assert r.ok and "ran-as-pam" in r.output, r.output


def test_key_with_a_wrong_code_is_refused(key_sshd):
    totp = add_key_user(key_sshd, "quin", "quin-pass-1")
    assert not key_sshd.login("quin", None, totp.wrong(), key=key_sshd.key).ok


def test_no_key_no_prompt(key_sshd):
    add_key_user(key_sshd, "rex", "rex-pass-1")
    r = finish(key_sshd.ssh("rex", "true"))
    assert not r.ok and "Permission denied (publickey)" in r.output


def su_fail(s, target: str, password: str, code: str) -> None:
    child = s.exec_tty("nobody", f"su {target} -c true")
    child.expect_exact("Directory password: ")
    child.sendline(password)
    child.expect_exact("Verification code: ")
    child.sendline(code)
    assert not finish(child).ok


def test_locked_user_is_refused_with_a_valid_key(key_sshd):
    totp = add_key_user(key_sshd, "sam", "sam-pass-1")
    for _ in range(3):
        assert not key_sshd.login("sam", None, totp.wrong(), key=key_sshd.key).ok
    r = key_sshd.login("sam", None, totp.fresh(), key=key_sshd.key)
    assert not r.ok and "locked" in r.output.lower(), r.output


def test_account_stack_refuses_a_locked_key_only_user(key_sshd):
    totp = add_key_user(key_sshd, "keyonly", "keyonly-pass-1")
    assert key_sshd.login("keyonly", None, None, key=key_sshd.key).ok
    for _ in range(3):  # lock it elsewhere: wrong codes through su
        su_fail(key_sshd, "keyonly", "keyonly-pass-1", totp.wrong())
    assert key_sshd.show("keyonly")["locked"] is True
    r = key_sshd.login("keyonly", None, None, key=key_sshd.key)
    assert not r.ok and "ran-as-" not in r.output
