"""Issue 4 through the real PAM stack: enrollment periods, self-service, admin flows.

DESIGN.md's behaviour table, row by row. The daemon's clock is moved with a
test-only offset; codes come from the secret parsed out of the conversation.
"""

from __future__ import annotations

import re

import pamdriver as pd
import pyotp
import pytest
from pamdriver import key_from, service
from testlib import NEW_KEY_CODE, as_user, code_at

pytestmark = pytest.mark.pam

PASSWORD = "correct horse battery"
NOBODY = 65534  # a system user that exists everywhere; our directory user "nobody"
DAY = 86400


class Enroller:
    """Answers like a person with a phone: password, then the code for the key shown."""

    def __init__(self, code: str | None = "phone", offset: float = 0.0) -> None:
        self.mode = code
        self.offset = offset
        self.key: str | None = None

    def __call__(self, message, transcript):
        if message.text == "Directory password: ":
            return PASSWORD
        if "to finish" in message.text:
            self.key = key_from(transcript)
            if self.mode == "phone":
                return code_at(pyotp.TOTP(self.key), self.offset)
            return self.mode
        if message.text.startswith("Press Enter"):
            return ""
        raise AssertionError(f"unexpected prompt {message.text!r}")


def enable(daemon, *names: str, days: int = 7) -> None:
    for name in names:
        daemon.add_user(name, mfa=False)
    daemon.ok("mfa.enable", names=list(names), enrollment_days=days)


def test_enroll_during_the_period_then_log_in_with_a_code(daemon, confdir):
    enable(daemon, "carol")
    svc = service(confdir, daemon)
    phone = Enroller()
    r = pd.run(confdir, svc, "carol", phone, call="both")
    assert r.rc == pd.PAM_SUCCESS, r
    infos = "\n".join(m.text for m in r.transcript if m.style == "info")
    assert "\u2584" in infos or "\u2580" in infos            # a QR code drawn in half blocks
    assert "otpauth://totp/" in infos and "Store this key" in infos
    assert "Recovery codes" in infos
    assert daemon.user("carol")["mfa"] == "active"
    assert any(e["event"] == "enrolled" for e in daemon.audit_events())
    # next login needs a fresh code from the enrolled key
    totp = pyotp.TOTP(phone.key)
    daemon.set_clock(30)
    r2 = pd.run(confdir, svc, "carol", [PASSWORD, code_at(totp, 30)])
    assert r2.rc == pd.PAM_SUCCESS
    assert [m.text for m in r2.transcript] == ["Directory password: ", "Verification code: "]
    daemon.set_clock(60)
    assert pd.run(confdir, svc, "carol", [PASSWORD]).rc != pd.PAM_SUCCESS


def test_skip_shows_days_left_and_keeps_the_same_pending_key(daemon, confdir):
    enable(daemon, "dave", days=7)
    svc = service(confdir, daemon)
    first, second = Enroller(code=""), Enroller(code="")
    r = pd.run(confdir, svc, "dave", first, call="both")
    assert r.rc == pd.PAM_SUCCESS
    assert any("7 day(s) left" in m.text for m in r.transcript)
    daemon.set_clock(2 * DAY)  # a day and more later: the same key, fewer days
    r = pd.run(confdir, svc, "dave", second, call="both")
    assert r.rc == pd.PAM_SUCCESS
    assert any("5 day(s) left" in m.text for m in r.transcript)
    assert first.key == second.key
    # scanned yesterday, finished today
    r = pd.run(confdir, svc, "dave", Enroller(offset=2 * DAY))
    assert r.rc == pd.PAM_SUCCESS and daemon.user("dave")["mfa"] == "active"
    assert [e["event"] for e in daemon.audit_events()].count("enrollment_skipped") == 2


def test_wrong_enrollment_codes_may_be_retried(daemon, confdir):
    enable(daemon, "erin")
    svc = service(confdir, daemon)
    tries = {"n": 0}

    def person(message, transcript):
        if message.text == "Directory password: ":
            return PASSWORD
        if "to finish" in message.text:
            tries["n"] += 1
            good = code_at(pyotp.TOTP(key_from(transcript)))
            return good if tries["n"] == 2 else f"{(int(good) + 7) % 10**6:06d}"
        return ""

    r = pd.run(confdir, svc, "erin", person)
    assert r.rc == pd.PAM_SUCCESS and tries["n"] == 2
    assert any(m.style == "error" and "not right" in m.text for m in r.transcript)


def test_wrong_password_never_shows_the_qr_code(daemon, confdir):
    enable(daemon, "fay")
    svc = service(confdir, daemon)
    r = pd.run(confdir, svc, "fay", ["wrong password", "123456"])
    assert r.rc == pd.PAM_AUTH_ERR
    assert [m.text for m in r.transcript] == ["Directory password: ", "Verification code: "]


def test_deadline_passed_is_refused_in_auth_and_account(daemon, confdir):
    enable(daemon, "gus", days=1)
    svc = service(confdir, daemon)
    daemon.set_clock(DAY + 60)
    r = pd.run(confdir, svc, "gus", [PASSWORD])
    assert r.rc == pd.PAM_ACCT_EXPIRED
    assert any("administrator" in m.text for m in r.transcript if m.style == "error")
    acct = pd.run(confdir, svc, "gus", [], call="acct")  # e.g. a publickey login
    assert acct.rc == pd.PAM_ACCT_EXPIRED
    # the admin resets MFA: a new period starts
    daemon.ok("mfa.reset", names=["gus"], enrollment_days=3)
    assert pd.run(confdir, svc, "gus", Enroller(offset=DAY + 60), call="both").rc == \
        pd.PAM_SUCCESS


def test_admin_bulk_reset_then_re_enroll(daemon, confdir):
    keys = {n: daemon.add_user(n) for n in ("u1", "u2", "u3")}
    svc = service(confdir, daemon)
    daemon.ok("mfa.reset", names=["u1", "u2", "u3"], enrollment_days=5)
    for name, old in keys.items():
        shown = daemon.user(name)
        assert shown["mfa"] == "pending" and shown["days_left"] == 5
        assert shown["recovery_codes_left"] == 0
        phone = Enroller()
        assert pd.run(confdir, svc, name, phone).rc == pd.PAM_SUCCESS
        assert phone.key != old.secret
    events = [e for e in daemon.audit_events() if e["event"] == "mfa_reset"]
    assert {e["user"] for e in events} == {"u1", "u2", "u3"}
    assert all(e["actor"] == "root" for e in events)


def test_admin_password_reset_of_an_admin_resets_their_totp(daemon, confdir):
    daemon.add_user("boss", admin=True)
    daemon.add_user("worker")
    daemon.ok("passwd.admin", name="worker", password="a brand new pw")
    assert daemon.user("worker")["mfa"] == "active"   # a plain user keeps the key
    data = daemon.ok("passwd.admin", name="boss", password="a brand new pw")
    assert data["mfa"] == "enroll_now"                # an admin's key is reset, no grace
    svc = service(confdir, daemon)
    r = pd.run(confdir, svc, "boss", ["a brand new pw", "", "", ""])
    assert r.rc == pd.PAM_AUTH_ERR and not any("day(s) left" in m.text for m in r.transcript)


def test_self_reset_interrupted_half_way_changes_nothing(daemon, confdir):
    old = daemon.add_user("nobody")
    # prove the old device, see the new key, then hang up (Ctrl-C) before confirming
    out = as_user(NOBODY, daemon.config["control_socket"], "reset", answers=[code_at(old)],
                  hang_up_after=1)
    assert out["exit"] is None and out["key"] and out["key"] != old.secret
    svc = service(confdir, daemon)
    daemon.set_clock(30)
    assert pd.run(confdir, svc, "nobody", [PASSWORD, code_at(pyotp.TOTP(out["key"]), 30)]
                  ).rc == pd.PAM_AUTH_ERR
    daemon.set_clock(60)
    assert pd.run(confdir, svc, "nobody", [PASSWORD, code_at(old, 60)]).rc == pd.PAM_SUCCESS


def test_self_reset_needs_the_old_device(daemon):
    old = daemon.add_user("nobody")
    wrong = f"{(int(code_at(old)) + 1) % 10**6:06d}"
    out = as_user(NOBODY, daemon.config["control_socket"], "reset", answers=[wrong])
    assert out["exit"] == 1 and out["key"] is None  # no new key was even shown


def test_self_reset_completed_switches_the_key(daemon, confdir):
    old = daemon.add_user("nobody")
    out = as_user(NOBODY, daemon.config["control_socket"], "reset",
                  answers=[code_at(old), NEW_KEY_CODE, ""])
    assert out["exit"] == 0, out
    new = pyotp.TOTP(out["key"])
    svc = service(confdir, daemon)
    daemon.set_clock(60)
    assert pd.run(confdir, svc, "nobody", [PASSWORD, code_at(old, 60)]).rc == pd.PAM_AUTH_ERR
    daemon.set_clock(90)
    assert pd.run(confdir, svc, "nobody", [PASSWORD, code_at(new, 90)]).rc == pd.PAM_SUCCESS
    assert any(e["event"] == "mfa_reset" and e["actor"] == "nobody"
               for e in daemon.audit_events())


def test_self_setup_and_recovery_codes(daemon, confdir):
    daemon.add_user("nobody", mfa=False)
    sock = daemon.config["control_socket"]
    out = as_user(NOBODY, sock, "setup", answers=[NEW_KEY_CODE, ""])
    assert out["exit"] == 0 and daemon.user("nobody")["mfa"] == "active"
    totp = pyotp.TOTP(out["key"])
    assert as_user(NOBODY, sock, "setup")["exit"] == 1  # already enrolled
    daemon.set_clock(30)
    out = as_user(NOBODY, sock, "recovery-codes", answers=[code_at(totp, 30), ""])
    assert out["exit"] == 0
    codes = re.findall(r"^  (\w{4}-\w{4}-\w{4})$", "\n".join(t for _, t in out["transcript"]),
                       re.M)
    assert len(codes) == 10
    svc = service(confdir, daemon)
    assert pd.run(confdir, svc, "nobody", [PASSWORD, codes[3]]).rc == pd.PAM_SUCCESS


def test_self_passwd_needs_password_and_code(daemon, confdir):
    totp = daemon.add_user("nobody")
    sock = daemon.config["control_socket"]
    out = as_user(NOBODY, sock, "passwd", answers=[PASSWORD, "000000" if code_at(totp) !=
                                                   "000000" else "111111"])
    assert out["exit"] == 1
    out = as_user(NOBODY, sock, "passwd", answers=[PASSWORD, code_at(totp), "fresh new pw",
                                                   "fresh new pw"])
    assert out["exit"] == 0, out
    svc = service(confdir, daemon)
    daemon.set_clock(30)
    assert pd.run(confdir, svc, "nobody", ["fresh new pw", code_at(totp, 30)]).rc == \
        pd.PAM_SUCCESS


def test_self_service_proofs_never_write_a_secret(daemon):
    """Issue 9's planted bug: a self-service proof (recovery-codes, reset, passwd)
    writing the answer or a recovery code into the audit or daemon log."""
    totp = daemon.add_user("nobody")
    sock = daemon.config["control_socket"]
    typed = [code_at(totp)]
    out = as_user(NOBODY, sock, "recovery-codes", answers=[typed[0], ""])
    assert out["exit"] == 0, out
    codes = re.findall(r"^  (\w{4}-\w{4}-\w{4})$",
                       "\n".join(t for _, t in out["transcript"]), re.M)
    assert len(codes) == 10
    daemon.set_clock(30)
    typed.append(f"{(int(code_at(totp, 30)) + 1) % 10**6:06d}")  # a wrong code
    assert as_user(NOBODY, sock, "recovery-codes", answers=[typed[1]])["exit"] == 1
    out = as_user(NOBODY, sock, "reset", answers=[codes[0], NEW_KEY_CODE, ""])  # recovery proof
    assert out["exit"] == 0, out
    new = pyotp.TOTP(out["key"])
    daemon.set_clock(60)
    typed.append(code_at(new, 60))
    out = as_user(NOBODY, sock, "passwd", answers=[PASSWORD, typed[2], "fresh new pw",
                                                   "fresh new pw"])
    assert out["exit"] == 0, out
    events = {e["event"] for e in daemon.audit_events()}
    assert {"recovery_codes_regenerated", "recovery_code_used", "mfa_reset",
            "password_changed"} <= events  # the proofs were audited...
    blob = daemon.audit_path.read_text() + daemon.log.read_text()
    for secret in [PASSWORD, "fresh new pw", totp.secret, new.secret, *codes]:
        assert secret not in blob  # ...and nothing they proved with
    for code in typed:
        assert not re.search(rf"(?<!\d){code}(?!\d)", blob)


def test_self_status_is_for_the_caller_only(daemon):
    daemon.add_user("nobody")
    daemon.add_user("alice", mfa=False)
    out = as_user(NOBODY, daemon.config["control_socket"], "status", {"name": "alice"})
    assert out["exit"] == 0 and out["data"]["name"] == "nobody"
    assert out["data"]["mfa"] == "active" and out["data"]["recovery_codes_left"] == 10


@pytest.mark.parametrize("verb,args", [
    ("user.add", {"name": "evil", "password": "whatever123"}),
    ("user.list", {}), ("user.show", {"name": "alice"}),
    ("mfa.reset", {"names": ["alice"]}), ("mfa.disable", {"names": ["alice"]}),
    ("mfa.enable", {"names": ["alice"], "enrollment_days": 3}),
    ("unlock", {"names": ["alice"]}), ("passwd.admin", {"name": "alice", "password": "x" * 12}),
    ("audit", {}), ("clock.set", {"offset": 100}),
])
def test_non_root_cannot_run_admin_verbs(daemon, verb, args):
    daemon.add_user("alice")
    before = daemon.user("alice")
    out = as_user(NOBODY, daemon.config["control_socket"], verb, args)
    assert out["exit"] == 4 and "root" in out["message"]
    assert daemon.user("alice") == before


def test_bad_admin_input_is_a_clear_error_and_changes_nothing(daemon):
    daemon.add_user("alice")
    before = daemon.user("alice")
    for argv, needle in [
        (["mfa", "reset", "alice", "--enrollment-days", "0"], "between 1 and 365"),
        (["mfa", "enable", "alice", "--enrollment-days", "366"], "between 1 and 365"),
        (["mfa", "reset", "alice", "ghost"], "no such user 'ghost'"),
        (["unlock", ""], "must not be empty"),
        (["user", "show", "ghost"], "no such user"),
    ]:
        out = daemon.cli(*argv)
        assert out.returncode in (2, 3), (argv, out)
        assert needle in out.stderr, (argv, out.stderr)
    assert daemon.user("alice") == before


def test_cli_lists_and_shows_for_people_and_scripts(daemon):
    daemon.add_user("alice")
    enable(daemon, "bob", days=9)
    table = daemon.cli("user", "list")
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["USER", "ADMIN", "MFA"]
    assert rows[0].split()[:3] == ["alice", "no", "active"]
    assert rows[1].split()[:4] == ["bob", "no", "pending", "9"]
    import json
    shown = json.loads(daemon.cli("user", "show", "bob", "--json").stdout)
    assert shown["mfa"] == "pending" and shown["days_left"] == 9 and not shown["locked"]
    assert "exit codes" in daemon.cli("--help").stdout


def test_doctor_reports_sockets_and_sshd_traps(daemon):
    from pam_jctotp.cli import doctor
    out = daemon.cli("doctor", "--json")
    import json
    findings = json.loads(out.stdout)
    assert any(f["level"] == "ok" and "daemon answers" in f["what"] for f in findings)
    assert any(f["level"] == "ok" and "PAM socket" in f["what"] for f in findings)
    traps = doctor.sshd_findings({"usepam": "yes", "kbdinteractiveauthentication": "no",
                                  "passwordauthentication": "yes",
                                  "authenticationmethods": "any"})
    assert [f.level for f in traps] == ["fail", "fail", "warn"]
    good = doctor.sshd_findings({"usepam": "yes", "kbdinteractiveauthentication": "yes",
                                 "passwordauthentication": "no",
                                 "authenticationmethods": "keyboard-interactive"})
    assert [f.level for f in good] == ["ok"]


def test_self_passwd_code_guesses_count_toward_the_lock(make_daemon):
    """Knowing the password must not buy unlimited code guesses via `jctotp passwd`."""
    daemon = make_daemon(max_attempts=3, unlock_after=0)
    totp = daemon.add_user("nobody")
    sock = daemon.config["control_socket"]
    valid = {code_at(totp, d) for d in (-30, 0, 30)}
    bad = next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in valid)
    for _ in range(3):
        assert as_user(NOBODY, sock, "passwd", answers=[PASSWORD, bad])["exit"] == 1
    shown = daemon.user("nobody")
    assert shown["locked"] and shown["failed_attempts"] == 3
    out = as_user(NOBODY, sock, "passwd", answers=[PASSWORD, code_at(totp)])
    assert out["exit"] == 5


def test_an_admin_password_reset_discards_the_pending_key(daemon, confdir):
    """Issue 9 item 6: whoever saw the pending key with the old password cannot
    finish that enrollment after a reset: the next login shows a new key."""
    enable(daemon, "hank")
    svc = service(confdir, daemon)
    before = Enroller(code="")
    assert pd.run(confdir, svc, "hank", before).rc == pd.PAM_SUCCESS
    assert daemon.ok("passwd.admin", name="hank", password=PASSWORD) is not None
    after = Enroller(code="")
    assert pd.run(confdir, svc, "hank", after).rc == pd.PAM_SUCCESS
    assert before.key and after.key and before.key != after.key
    # the old key no longer enrolls; the new one does
    stale = pd.run(confdir, svc, "hank", Enroller(code=code_at(pyotp.TOTP(before.key))))
    assert stale.rc != pd.PAM_SUCCESS and daemon.user("hank")["mfa"] == "pending"
