"""`passwd` through the real libpam (the shim's pam_sm_chauthtok) with the shipped
password stack (packaging/pam.d/passwd): current password, code, new one twice."""

from __future__ import annotations

import pamdriver as pd
import pytest
from testlib import REPO, code_at

pytestmark = pytest.mark.pam

PASSWORD = "correct horse battery"
NEW = "a new long passphrase"


def passwd_service(confdir, daemon, after: str = "password required pam_permit.so") -> str:
    """packaging/pam.d/passwd, the module at the built shim on the daemon's socket;
    `after` (pam_permit) stands in for common-password's pam_unix."""
    lines = []
    for line in (REPO / "packaging" / "pam.d" / "passwd").read_text().splitlines():
        if line.startswith("password") and "pam_jctotp.so" in line:
            lines.append(line.replace("pam_jctotp.so", f"{pd.SHIM} socket={daemon.pam_socket} "
                                      "timeout=5"))
        elif line.startswith("@include common-password"):
            lines.append(after)
    assert len(lines) == 2, lines
    pd.write_service(confdir, "jctotp-passwd", lines)
    pd.service(confdir, daemon)  # jctotp-test: auth + account, to log in afterwards
    return "jctotp-passwd"


def prompts(r: pd.Result) -> list[str]:
    return [m.text for m in r.transcript if m.style.startswith("prompt")]


def logs_in(confdir, daemon, password: str, offset: float) -> bool:
    daemon.set_clock(offset)
    totp = daemon.totp
    r = pd.run(confdir, "jctotp-test", "alice", [password, code_at(totp, offset)])
    return r.rc == pd.PAM_SUCCESS


@pytest.fixture
def alice(daemon):
    daemon.totp = daemon.add_user("alice")
    return daemon


def test_right_code_changes_the_password(alice, confdir):
    svc = passwd_service(confdir, alice)
    r = pd.run(confdir, svc, "alice", [PASSWORD, code_at(alice.totp), NEW, NEW], call="passwd")
    assert r.rc == pd.PAM_SUCCESS, r
    assert prompts(r) == ["Current password: ",
                          "Current verification code (or a recovery code) to confirm: ",
                          "New password: ", "New password again: "]
    assert [m.style for m in r.transcript if m.style.startswith("prompt")] == ["prompt_off"] * 4
    assert not logs_in(confdir, alice, PASSWORD, 60)
    assert logs_in(confdir, alice, NEW, 120)
    assert "password_changed" in [e["event"] for e in alice.audit_events()]


def test_wrong_code_refuses_and_counts(alice, confdir):
    svc = passwd_service(confdir, alice)
    wrong = next(c for c in ("000000", "111111") if c not in
                 {code_at(alice.totp, d) for d in (-30, 0, 30)})
    r = pd.run(confdir, svc, "alice", [PASSWORD, wrong], call="passwd")
    assert r.rc == pd.PAM_AUTH_ERR, r   # pam_permit after it did not make it a success
    assert "New password: " not in prompts(r)
    assert alice.user("alice")["failed_attempts"] == 1
    assert logs_in(confdir, alice, PASSWORD, 30)


def test_no_code_no_change(alice, confdir):
    svc = passwd_service(confdir, alice)
    r = pd.run(confdir, svc, "alice", [PASSWORD, ""], call="passwd")
    assert r.rc == pd.PAM_AUTH_ERR, r
    r = pd.run(confdir, svc, "alice", [PASSWORD], call="passwd")  # the conversation ends there
    assert r.rc != pd.PAM_SUCCESS, r
    assert logs_in(confdir, alice, PASSWORD, 30)


def test_wrong_current_password_counts(alice, confdir):
    svc = passwd_service(confdir, alice)
    r = pd.run(confdir, svc, "alice", ["not the password"], call="passwd")
    assert r.rc == pd.PAM_AUTH_ERR and prompts(r) == ["Current password: "], r
    assert alice.user("alice")["failed_attempts"] == 1


def test_the_code_is_used_up(alice, confdir):
    svc = passwd_service(confdir, alice)
    code = code_at(alice.totp)
    assert pd.run(confdir, svc, "alice", [PASSWORD, code, NEW, NEW],
                  call="passwd").rc == pd.PAM_SUCCESS
    r = pd.run(confdir, "jctotp-test", "alice", [NEW, code])
    assert r.rc == pd.PAM_AUTH_ERR  # the same code again: a replay
    assert "replay_refused" in [e["event"] for e in alice.audit_events()]


def test_users_the_daemon_does_not_manage_are_ignored(daemon, confdir):
    """PAM_IGNORE, after asking the new password twice (Linux-PAM's own prompts)
    and leaving it in PAM_AUTHTOK, as pam_pwquality does: pam_unix with
    pam-auth-update's use_authtok takes it from there (the .deb test changes
    root's password with chpasswd through that stack)."""
    daemon.ok("user.add", name="keyonly", password=None, system_account=False)
    svc = passwd_service(confdir, daemon)
    for user in ("nosuchuser", "keyonly"):
        r = pd.run(confdir, svc, user, [NEW, NEW], call="passwd")
        assert r.rc == pd.PAM_SUCCESS, (user, r)
        assert len(prompts(r)) == 2 and all("new" in p.lower() for p in prompts(r)), r
        # two different answers: refused before any module changes anything
        r = pd.run(confdir, svc, user, [NEW, NEW + "x"], call="passwd")
        assert r.rc != pd.PAM_SUCCESS and "do not match" in r.transcript[-1].text, (user, r)
    assert not [e for e in daemon.audit_events() if e["event"] in ("login_fail", "abandoned")]


def test_prelim_check_uses_nothing_up(alice, confdir):
    """Leaving at the first prompt of the update pass: the prelim pass and the
    prompt counted nothing and used no code."""
    svc = passwd_service(confdir, alice)
    r = pd.run(confdir, svc, "alice", [], call="passwd")
    assert r.rc != pd.PAM_SUCCESS
    assert alice.user("alice")["failed_attempts"] == 0
    assert logs_in(confdir, alice, PASSWORD, 0)
