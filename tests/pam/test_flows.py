"""Issue 11 (JumpCloud's admin flows), issue 12's idempotent verbs and bug 8, and
issue 9 items 8 and 13, through the real libpam, the built shim and a real jctotpd.

Codes come from the key shown in the conversation (pyotp) and the daemon's
clock, which the tests move with a test-only offset.
"""

from __future__ import annotations

import json
import re
import time

import pamdriver as pd
import pyotp
import pytest
from pamdriver import key_from, service
from testlib import TEST_DATABASE, code_at

from pam_jctotp.core.login import PASSWORD_PROMPT

pytestmark = pytest.mark.pam

PASSWORD = "correct horse battery"
DAY = 86400
SKIP_PROMPT = "Enter the 6-digit code from your app to finish (Enter to skip): "
NOW_PROMPT = "Enter the 6-digit code your app shows for the new key: "
ACK_PROMPT = "Press Enter when you have stored them: "


def prompts(result: pd.Result) -> list[str]:
    return [m.text for m in result.transcript if m.style.startswith("prompt")]


def text(result: pd.Result) -> str:
    return "\n".join(m.text for m in result.transcript)


class Phone:
    """A person enrolling: the password, then the code of the key shown (or `code`),
    then Enter at the recovery codes (or `ack`: None hangs up there)."""

    def __init__(self, code: str | None = None, offset: float = 0.0, password: str = PASSWORD,
                 ack=""):
        self.code, self.offset, self.password, self.ack = code, offset, password, ack
        self.key: str | None = None

    def __call__(self, message, transcript):
        if message.text == PASSWORD_PROMPT:
            return self.password
        if message.text in (SKIP_PROMPT, NOW_PROMPT):
            self.key = key_from(transcript)
            return self.code if self.code is not None else code_at(pyotp.TOTP(self.key),
                                                                   self.offset)
        if message.text == ACK_PROMPT:
            return self.ack() if callable(self.ack) else self.ack
        raise AssertionError(f"unexpected prompt {message.text!r}")


def cli_json(daemon, *argv: str):
    out = daemon.cli("--json", *argv)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def events(daemon, user: str, wait_for: str | None = None) -> list[dict]:
    """The user's audit events; waits (briefly) for `wait_for`, which the daemon
    may write just after the shim returned (an abandoned login)."""
    deadline = time.monotonic() + 5
    while True:
        found = [e for e in daemon.audit_events() if e.get("user") == user]
        if wait_for is None or any(e["event"] == wait_for for e in found) or \
                time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def expire(daemon, confdir, svc, name: str, days: int = 1) -> None:
    daemon.add_user(name, mfa=False)
    daemon.ok("mfa.enable", names=[name], enrollment_days=days)
    daemon.set_clock(days * DAY + 60)
    assert pd.run(confdir, svc, name, [PASSWORD]).rc == pd.PAM_ACCT_EXPIRED


# --- issue 11: unlock of an expired enrollment ----------------------------------------

def test_unlock_of_an_expired_enrollment_gives_a_new_period(daemon, confdir):
    svc = service(confdir, daemon)
    expire(daemon, confdir, svc, "carol")
    shown = daemon.user("carol")
    assert shown["locked"] is True and shown["lock_reason"] == "enrollment expired"
    listed = next(u for u in daemon.ok("user.list") if u["name"] == "carol")
    assert listed["locked"] is True and listed["lock_reason"] == "enrollment expired"
    table = daemon.cli("user", "list").stdout.splitlines()
    assert table[0].split()[5] == "LOCKED" and table[1].split()[4] == "yes"

    out = daemon.cli("unlock", "carol")
    assert out.returncode == 0 and "7 day(s) to enroll" in out.stdout, out
    shown = daemon.user("carol")
    assert shown["locked"] is False and shown["mfa"] == "pending" and shown["days_left"] == 7
    phone = Phone(offset=DAY + 60)
    r = pd.run(confdir, svc, "carol", phone, call="both")
    assert r.rc == pd.PAM_SUCCESS, r
    assert "otpauth://totp/" in text(r) and daemon.user("carol")["mfa"] == "active"
    assert any(e["event"] == "unlocked" and e.get("reason") == "enrollment expired"
               for e in events(daemon, "carol"))


def test_unlock_of_an_expired_enrollment_with_enroll_now_or_days(daemon, confdir):
    svc = service(confdir, daemon)
    for name in ("dora", "ed"):
        daemon.add_user(name, mfa=False)
    daemon.ok("mfa.enable", names=["dora", "ed"], enrollment_days=1)
    daemon.set_clock(DAY + 60)
    assert [daemon.user(n)["lock_reason"] for n in ("dora", "ed")] == ["enrollment expired"] * 2
    assert cli_json(daemon, "unlock", "dora", "--enroll-now")["users"][0]["mfa"] == "enroll_now"
    assert cli_json(daemon, "unlock", "ed", "--enrollment-days", "3")["users"][0][
        "days_left"] == 3
    r = pd.run(confdir, svc, "dora", Phone(code=""))
    assert r.rc != pd.PAM_SUCCESS and SKIP_PROMPT not in prompts(r)


def test_status_shows_an_expired_enrollment_as_locked(daemon, confdir):
    from testlib import as_user
    daemon.add_user("nobody", mfa=False)
    daemon.ok("mfa.enable", names=["nobody"], enrollment_days=1)
    daemon.set_clock(DAY + 60)
    out = as_user(65534, daemon.config["control_socket"], "status")
    assert out["data"]["locked"] is True and out["data"]["lock_reason"] == "enrollment expired"


# --- issue 11: --enroll-now -----------------------------------------------------------------

def test_enroll_now_no_skip_no_password_only_login(daemon, confdir):
    svc = service(confdir, daemon)
    daemon.add_user("erin", mfa=False)
    shown = cli_json(daemon, "mfa", "enable", "erin", "--enroll-now")["users"][0]
    assert shown["mfa"] == "enroll_now" and shown["days_left"] is None
    # Enter does not skip: it is a wrong code, and the login fails
    r = pd.run(confdir, svc, "erin", Phone(code=""), call="both")
    assert r.rc == pd.PAM_AUTH_ERR
    assert prompts(r)[1:] == [NOW_PROMPT] * 3 and "otpauth://totp/" in text(r)
    assert daemon.user("erin")["mfa"] == "enroll_now"
    # no way around it in the account stack either (a publickey login)
    assert pd.run(confdir, svc, "erin", [], call="acct").rc == pd.PAM_PERM_DENIED
    daemon.set_clock(30)
    r = pd.run(confdir, svc, "erin", Phone(offset=30), call="both")
    assert r.rc == pd.PAM_SUCCESS and daemon.user("erin")["mfa"] == "active"


def test_enroll_now_on_reset_and_its_flags(daemon, confdir):
    daemon.add_user("fred")
    assert cli_json(daemon, "mfa", "reset", "fred", "--enroll-now")["users"][0]["mfa"] == \
        "enroll_now"
    zero = daemon.cli("mfa", "reset", "fred", "--enrollment-days", "0")
    assert zero.returncode == 2 and "--enroll-now" in zero.stderr
    both = daemon.cli("mfa", "enable", "fred", "--enroll-now", "--enrollment-days", "3")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    r = pd.run(confdir, service(confdir, daemon), "fred", Phone(code=""))
    assert r.rc == pd.PAM_AUTH_ERR and SKIP_PROMPT not in prompts(r)


# --- issue 11: admins get no grace; compromised resets ------------------------------------

def test_admin_password_reset_means_enroll_at_the_next_login(daemon, confdir):
    daemon.add_user("boss", admin=True)
    svc = service(confdir, daemon)
    data = daemon.ok("passwd.admin", name="boss", password="a brand new pw")
    assert data["mfa"] == "enroll_now" and data["admin"] is True
    r = pd.run(confdir, svc, "boss", Phone(code="", password="a brand new pw"))
    assert r.rc == pd.PAM_AUTH_ERR and SKIP_PROMPT not in prompts(r)
    r = pd.run(confdir, svc, "boss", Phone(password="a brand new pw"), call="both")
    assert r.rc == pd.PAM_SUCCESS and daemon.user("boss")["mfa"] == "active"


def test_admin_mfa_reset_and_enable_imply_enroll_now(daemon, confdir):
    daemon.add_user("boss", admin=True)
    daemon.add_user("chief", admin=True, mfa=False)
    refused = daemon.cli("mfa", "reset", "boss", "--enrollment-days", "7")
    assert refused.returncode == 2 and "admins get no enrollment period" in refused.stderr
    assert daemon.user("boss")["mfa"] == "active"  # nothing changed
    assert cli_json(daemon, "mfa", "reset", "boss")["users"][0]["mfa"] == "enroll_now"
    assert cli_json(daemon, "mfa", "enable", "chief")["users"][0]["mfa"] == "enroll_now"
    r = pd.run(confdir, service(confdir, daemon), "chief", Phone(code=""))
    assert r.rc == pd.PAM_AUTH_ERR and prompts(r)[1] == NOW_PROMPT


def test_compromised_reset_is_enroll_now_and_audited_as_such(daemon, confdir):
    old = daemon.add_user("gina")
    out = cli_json(daemon, "mfa", "reset", "gina", "--compromised")
    assert out["users"][0]["mfa"] == "enroll_now"
    svc = service(confdir, daemon)
    r = pd.run(confdir, svc, "gina", Phone(code=""))
    assert r.rc == pd.PAM_AUTH_ERR and SKIP_PROMPT not in prompts(r)
    phone = Phone()
    assert pd.run(confdir, svc, "gina", phone).rc == pd.PAM_SUCCESS
    assert phone.key != old.secret
    reset = [e for e in events(daemon, "gina") if e["event"] == "mfa_reset"]
    assert reset and reset[-1]["compromised"] is True and reset[-1]["reason"] == "compromised"
    assert daemon.cli("mfa", "reset", "gina", "--compromised", "--enrollment-days",
                      "3").returncode == 2


# --- issue 11: resetting a locked user lifts the lock -------------------------------------

def test_mfa_reset_of_a_locked_user_lifts_the_lock(make_daemon, confdir):
    daemon = make_daemon(max_attempts=2, unlock_after=0)
    totp = daemon.add_user("hugo")
    svc = service(confdir, daemon)
    bad = next(f"{n:06d}" for n in range(10**6)
               if f"{n:06d}" not in {code_at(totp, d) for d in (-30, 0, 30)})
    for _ in range(2):
        pd.run(confdir, svc, "hugo", [PASSWORD, bad])
    assert daemon.user("hugo")["locked"] is True
    out = daemon.cli("mfa", "reset", "hugo")
    assert out.returncode == 0 and "lock was lifted" in out.stdout, out
    assert daemon.user("hugo")["locked"] is False
    r = pd.run(confdir, svc, "hugo", Phone(), call="both")
    assert r.rc == pd.PAM_SUCCESS and "otpauth://totp/" in text(r)
    names = [e["event"] for e in events(daemon, "hugo")]
    assert "mfa_reset" in names and "unlocked" in names


# --- issue 11: recovery_codes: 0, booleans, {email} ----------------------------------------

def test_no_recovery_codes_means_no_block_and_no_prompt(make_daemon, confdir):
    daemon = make_daemon(recovery_codes=0)
    daemon.add_user("ivy", mfa=False)
    daemon.ok("mfa.enable", names=["ivy"], enrollment_days=3)
    r = pd.run(confdir, service(confdir, daemon), "ivy", Phone(), call="both")
    assert r.rc == pd.PAM_SUCCESS
    assert prompts(r) == [PASSWORD_PROMPT, SKIP_PROMPT]
    assert "Recovery codes" not in text(r) and "stored them" not in text(r)
    assert daemon.user("ivy")["mfa"] == "active"


def test_booleans_are_yes_no_for_people_and_true_false_in_json(daemon):
    daemon.add_user("boss", admin=True)
    daemon.add_user("joe", mfa=False)
    for name in ("boss", "joe"):
        shown = cli_json(daemon, "user", "show", name)
        for key in ("admin", "mfa_required", "locked", "has_password"):
            assert isinstance(shown[key], bool), (key, shown[key])
        assert shown["admin"] is (name == "boss")
        human = daemon.cli("user", "show", name).stdout
        assert re.search(r"^admin +(yes|no)$", human, re.M), human
        assert not re.search(r"\b(True|False)\b", human)
    listed = cli_json(daemon, "user", "list")
    assert [u["admin"] for u in listed] == [True, False]
    rows = daemon.cli("user", "list").stdout.splitlines()[1:]
    assert [row.split()[1] for row in rows] == ["yes", "no"]


def test_account_name_with_email(make_daemon, confdir):
    daemon = make_daemon(account_name="{email}")
    daemon.add_user("kim", mfa=False)
    daemon.add_user("lee", mfa=False)
    assert daemon.cli("user", "set", "kim", "--email", "not an address").returncode == 2
    assert daemon.cli("user", "set", "kim", "--email", "kim@example.org").returncode == 0
    assert daemon.user("kim")["email"] == "kim@example.org"
    assert "kim@example.org" in daemon.cli("user", "show", "kim").stdout
    daemon.ok("mfa.enable", names=["kim", "lee"], enrollment_days=3)
    svc = service(confdir, daemon)
    for name, label in (("kim", "kim@example.org"), ("lee", "lee@")):
        phone = Phone()
        r = pd.run(confdir, svc, name, phone)
        assert r.rc == pd.PAM_SUCCESS
        uri = re.search(r"URI: (\S+)", text(r)).group(1)
        assert pyotp.parse_uri(uri).name.startswith(label), uri


# --- issue 12: idempotent verbs ---------------------------------------------------------

def test_idempotent_verbs_report_changed_false_the_second_time(make_daemon, confdir):
    daemon = make_daemon(max_attempts=1)
    pw = PASSWORD + "\n"
    runs = [
        ("user", "add", "mona", "--password-stdin", "--no-system-account", "--exist-ok"),
        ("mfa", "enable", "mona"),  # an explicit --enrollment-days always sets a new deadline
        ("user", "set", "mona", "--email", "mona@example.org", "--max-attempts", "3"),
        ("mfa", "disable", "mona"),
    ]
    for argv in runs:
        first = json.loads(daemon.cli("--json", *argv, input=pw).stdout)
        second = json.loads(daemon.cli("--json", *argv, input=pw).stdout)
        assert (first["changed"], second["changed"]) == (True, False), argv
    # unlock: a locked user once, then nothing to do (and nothing audited)
    daemon.add_user("nina", mfa=False)
    pd.run(confdir, service(confdir, daemon), "nina", ["wrong password"])
    assert daemon.user("nina")["locked"]
    assert cli_json(daemon, "unlock", "nina")["changed"] is True
    audited = len(daemon.audit_events())
    again = daemon.cli("--json", "unlock", "nina")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False
    assert "not locked" in daemon.cli("unlock", "nina").stdout
    assert len(daemon.audit_events()) == audited


def test_user_add_exist_ok_refuses_a_different_user(daemon):
    daemon.add_user("olga", mfa=False)
    assert daemon.cli("user", "add", "olga", "--password-stdin", "--no-system-account",
                      input=PASSWORD + "\n").returncode == 2  # no --exist-ok: an error
    other = daemon.cli("user", "add", "olga", "--admin", "--password-stdin",
                       "--no-system-account", "--exist-ok", input=PASSWORD + "\n")
    assert other.returncode == 1 and "admin" in other.stderr
    wrong_pw = daemon.cli("user", "add", "olga", "--password-stdin", "--no-system-account",
                          "--exist-ok", input="another password\n")
    assert wrong_pw.returncode == 1 and "password" in wrong_pw.stderr


def test_mfa_enable_of_a_pending_user_keeps_the_deadline_unless_told(daemon):
    daemon.add_user("pia", mfa=False)
    daemon.ok("mfa.enable", names=["pia"], enrollment_days=5)
    daemon.set_clock(2 * DAY)
    again = daemon.ok("mfa.enable", names=["pia"])
    assert again["changed"] is False and again["users"][0]["days_left"] == 3
    told = daemon.ok("mfa.enable", names=["pia"], enrollment_days=9)
    assert told["changed"] is True and told["users"][0]["days_left"] == 9


# --- issue 12 bug 8 and issue 9 item 13: a login cut at "Press Enter" ------------------------

def test_hanging_up_at_press_enter_counts_nothing_and_is_audited(daemon, confdir):
    daemon.add_user("quinn", mfa=False)
    daemon.ok("mfa.enable", names=["quinn"], enrollment_days=3)
    svc = service(confdir, daemon)
    first = Phone(ack=lambda: None)  # the client disconnects at the prompt
    r = pd.run(confdir, svc, "quinn", first)
    assert r.rc != pd.PAM_SUCCESS and prompts(r)[-1] == ACK_PROMPT
    assert any(e["event"] == "abandoned" for e in events(daemon, "quinn", "abandoned"))
    shown = daemon.user("quinn")
    assert shown["failed_attempts"] == 0
    # The recovery codes were never acknowledged: nothing was committed, the key
    # is still pending, and the next login finishes it and shows new codes.
    assert shown["mfa"] == "pending" and shown["recovery_codes_left"] == 0
    daemon.set_clock(30)
    second = Phone(offset=30)
    r = pd.run(confdir, svc, "quinn", second, call="both")
    assert r.rc == pd.PAM_SUCCESS and second.key == first.key
    assert "Recovery codes" in text(r) and daemon.user("quinn")["mfa"] == "active"


def test_kill_9_before_the_codes_are_acknowledged_leaves_the_user_pending(daemon, confdir):
    daemon.add_user("rick", mfa=False)
    daemon.ok("mfa.enable", names=["rick"], enrollment_days=3)
    svc = service(confdir, daemon)

    def kill_then_enter():
        daemon.kill()  # the codes are on the screen, the daemon dies
        return ""

    first = Phone(ack=kill_then_enter)
    assert pd.run(confdir, svc, "rick", first).rc == pd.PAM_AUTHINFO_UNAVAIL
    daemon.start()
    shown = daemon.user("rick")
    assert shown["mfa"] == "pending" and shown["recovery_codes_left"] == 0
    daemon.set_clock(30)
    second = Phone(offset=30)
    r = pd.run(confdir, svc, "rick", second)
    assert r.rc == pd.PAM_SUCCESS
    # A fleet host never reads a key back from the database (issue 22): the unconfirmed
    # key lived in the killed daemon only, so the user is shown a new one.
    assert (second.key == first.key) is (TEST_DATABASE != "postgres")
    assert "Recovery codes" in text(r)
    assert daemon.user("rick")["recovery_codes_left"] == daemon.config.get("recovery_codes", 10)


# --- issue 9 item 8: unknown names lock like real ones -------------------------------------

def test_an_unknown_name_locks_like_a_real_one(make_daemon, confdir):
    daemon = make_daemon(max_attempts=5, unlock_after=0)
    daemon.add_user("sam", mfa=False)
    svc = service(confdir, daemon)
    seen = {}
    for name in ("sam", "nosuchuser"):
        seen[name] = [pd.run(confdir, svc, name, ["wrong password"]) for _ in range(7)]
    assert [(r.rc, [(m.style, m.text) for m in r.transcript]) for r in seen["sam"]] == \
        [(r.rc, [(m.style, m.text) for m in r.transcript]) for r in seen["nosuchuser"]]
    assert [r.rc for r in seen["nosuchuser"]] == [pd.PAM_AUTH_ERR] * 5 + [pd.PAM_MAXTRIES] * 2
    assert "locked" in text(seen["nosuchuser"][4])
    assert daemon.user("sam")["locked"] is True
