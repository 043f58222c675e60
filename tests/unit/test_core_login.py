"""The login conversation, sans I/O: pam_jctotp/core/login.py driven by harness.drive."""

from __future__ import annotations

import pyotp
import pytest
from harness import PASSWORD, Run, drive

from pam_jctotp.core import login as cv
from pam_jctotp.core import policy, verbs
from pam_jctotp.core.login import Login
from pam_jctotp.core.name_table import MemoryNames
from pam_jctotp.core.steps import Info, Prompt
from pam_jctotp.model import ExitCode, LoginRequest, MfaState, VerdictCode
from pam_jctotp.secret import Secret
from pam_jctotp.store.sqlite_names import SharedUnknownNames
from pam_jctotp.store.unknown_names import UnknownNames

SUCCESS, AUTH_ERR, IGNORE, MAXTRIES = (VerdictCode.SUCCESS, VerdictCode.AUTH_ERR,
                                       VerdictCode.IGNORE, VerdictCode.MAXTRIES)
ACCT_EXPIRED, PERM_DENIED, USER_UNKNOWN = (VerdictCode.ACCT_EXPIRED, VerdictCode.PERM_DENIED,
                                           VerdictCode.USER_UNKNOWN)

PW_CODE = [cv.PASSWORD_PROMPT, cv.CODE_PROMPT]


def login(world, user: str, answers=(), *, call: str = "auth", factors: str = "password,totp",
          rhost: str = "", authtok: str | None = None) -> Run:
    req = LoginRequest(call=call, service="sshd", user=user, rhost=rhost, tty="ssh",
                       factors=factors, authtok=Secret(authtok) if authtok is not None else None)
    return drive(Login(world.acc, req).run(), answers, world.directory)


def rec(world, name):
    return world.store.get(name)


# --- MFA off: password only ------------------------------------------------------

def test_off_logs_in_with_the_password_alone(world):
    world.add("paula", mfa="off")
    r = login(world, "paula", [PASSWORD])
    assert r.code == SUCCESS and not r.end.delay
    assert r.prompts == [cv.PASSWORD_PROMPT]
    assert r.verifies == 1


def test_off_wrong_password_fails_with_a_delay_and_counts(world):
    world.add("paula", mfa="off")
    r = login(world, "paula", ["nope"])
    assert r.code == AUTH_ERR and r.end.delay
    assert rec(world, "paula").failed_count == 1
    assert login(world, "paula", [PASSWORD]).code == SUCCESS
    assert rec(world, "paula").failed_count == 0  # success resets


def test_off_with_require_mfa_for_all_is_refused(make_world):
    world = make_world(require_mfa_for_all=True)
    world.add("paula", mfa="off")
    r = login(world, "paula", [PASSWORD])
    assert r.code == PERM_DENIED
    assert "required" in r.text()
    assert login(world, "paula", call="acct").code == PERM_DENIED


# --- active -------------------------------------------------------------------------

def test_active_password_and_code(world):
    totp = world.add("alice")
    r = login(world, "alice", [PASSWORD, world.code(totp)])
    assert r.code == SUCCESS
    assert r.shown == [("prompt", cv.PASSWORD_PROMPT), ("prompt", cv.CODE_PROMPT)]
    assert all(not p.echo for p in r.steps if isinstance(p, Prompt))
    assert world.audit_events()[-1] == "login_ok"


def test_active_code_is_accepted_once(world):
    totp = world.add("alice")
    code = world.code(totp)
    assert login(world, "alice", [PASSWORD, code]).code == SUCCESS
    assert login(world, "alice", [PASSWORD, code]).code == AUTH_ERR
    assert login(world, "alice", [PASSWORD, world.code(totp, -30)]).code == AUTH_ERR  # older
    assert "replay_refused" in world.audit_events()
    world.advance(30)
    assert login(world, "alice", [PASSWORD, world.code(totp)]).code == SUCCESS


def test_active_window(world):
    totp = world.add("alice")
    assert login(world, "alice", [PASSWORD, world.code(totp, -60)]).code == AUTH_ERR
    assert login(world, "alice", [PASSWORD, world.code(totp, 30)]).code == SUCCESS


def test_active_wrong_code_counts(world):
    totp = world.add("alice")
    assert login(world, "alice", [PASSWORD, world.wrong(totp)]).code == AUTH_ERR
    assert rec(world, "alice").failed_count == 1


def test_active_wrong_password_does_not_burn_the_code(world):
    totp = world.add("alice")
    code = world.code(totp)
    assert login(world, "alice", ["wrong", code]).code == AUTH_ERR
    assert rec(world, "alice").last_step == -1
    assert login(world, "alice", [PASSWORD, code]).code == SUCCESS


def test_active_recovery_code_works_once(world):
    world.add("alice")
    code = world.codes[0]
    assert login(world, "alice", [PASSWORD, code.upper()]).code == SUCCESS
    assert login(world, "alice", [PASSWORD, code]).code == AUTH_ERR
    assert world.store.recovery_codes_left("alice") == len(world.codes) - 1
    assert "recovery_code_used" in world.audit_events()


def test_active_wrong_password_does_not_burn_a_recovery_code(world):
    world.add("alice")
    assert login(world, "alice", ["wrong", world.codes[0]]).code == AUTH_ERR
    assert world.store.recovery_codes_left("alice") == len(world.codes)


def test_use_first_pass_asks_only_the_code(world):
    totp = world.add("alice")
    r = login(world, "alice", [world.code(totp)], authtok=PASSWORD)
    assert r.code == SUCCESS and r.prompts == [cv.CODE_PROMPT]
    world.advance(30)
    assert login(world, "alice", [world.code(totp)], authtok="wrong").code == AUTH_ERR


def test_factors_totp_asks_only_the_code_and_checks_no_password(world):
    totp = world.add("alice")
    r = login(world, "alice", [world.code(totp)], factors="totp")
    assert r.code == SUCCESS and r.prompts == [cv.CODE_PROMPT] and r.verifies == 0
    world.advance(30)
    assert login(world, "alice", [world.wrong(totp)], factors="totp").code == AUTH_ERR


def test_factors_totp_without_mfa_is_no_opinion(world):
    world.add("paula", mfa="off")
    r = login(world, "paula", factors="totp")
    assert r.code == IGNORE and r.prompts == []


# --- unknown users ------------------------------------------------------------------

def test_unknown_user_sees_exactly_what_a_default_user_sees(world):
    """Issue 9 item 8: a default user (`jctotp user add`: MFA off) shows one prompt."""
    world.add("paula", mfa="off")
    known = login(world, "paula", ["wrong"])
    unknown = login(world, "mallory", ["wrong"])
    assert unknown.code == known.code == AUTH_ERR
    assert unknown.end == known.end  # delay too
    assert unknown.shown == known.shown == [("prompt", cv.PASSWORD_PROMPT)]
    assert unknown.verifies == known.verifies == 1  # the same argon2 work


def test_unknown_user_looks_enrolled_where_mfa_is_required_for_all(make_world):
    world = make_world(require_mfa_for_all=True)
    totp = world.add("alice")
    known = login(world, "alice", [PASSWORD, world.wrong(totp)])
    unknown = login(world, "mallory", [PASSWORD, "123456"])
    assert unknown.end == known.end and unknown.shown == known.shown
    assert unknown.verifies == known.verifies == 1
    assert login(world, "mallory", ["wrong", "123456"]).shown == \
        login(world, "alice", ["wrong", "123456"]).shown


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "shared"])
@pytest.mark.parametrize("limit", [5, 3])
def test_unknown_name_locks_like_a_real_one(make_world, limit, shared, tmp_path):
    """Issue 9 item 8: after max_attempts wrong passwords a real name and an unknown
    name both say "locked", the same way, at the same attempt; both lift the same.
    The same with the counters every process of the host shares (pam_processes)."""
    world = make_world(max_attempts=limit, unlock_after=600)
    if shared:
        world.acc.unknown = UnknownNames(SharedUnknownNames(tmp_path / "unknown.db"))
    world.add("paula", mfa="off")
    runs = {name: [login(world, name, ["wrong"]) for _ in range(limit + 2)]
            for name in ("paula", "mallory")}
    assert [(r.shown, r.end) for r in runs["paula"]] == \
        [(r.shown, r.end) for r in runs["mallory"]]
    locked_at = [i for i, r in enumerate(runs["mallory"]) if "locked" in r.text()]
    assert locked_at == list(range(limit - 1, limit + 2))
    assert runs["mallory"][-1].code == MAXTRIES and runs["mallory"][-1].verifies == 0
    # the right password of the real user is refused while locked, as any answer is
    assert login(world, "paula", [PASSWORD]).code == MAXTRIES
    world.advance(601)
    assert login(world, "mallory", ["wrong"]).shown == login(world, "paula", ["wrong"]).shown
    assert "locked" not in login(world, "mallory", ["wrong"]).text()


def test_unknown_name_counters_are_bounded(world):
    world.acc.unknown = UnknownNames(MemoryNames(size=3))
    for n in range(10):
        login(world, f"ghost{n}", ["wrong"])
    assert len(world.acc.unknown.table) == 3


def test_unknown_user_with_a_wrong_password_looks_like_a_known_one(world):
    world.add("paula", mfa="off")
    known = login(world, "paula", ["wrong"])
    unknown = login(world, "mallory", ["wrong"])
    assert unknown.shown == known.shown and unknown.end == known.end


def test_pending_or_expired_user_with_a_wrong_password_looks_enrolled(world):
    world.add("alice")
    world.add("pete", mfa="pending")
    world.add("eve", mfa="expired")
    shown = {name: login(world, name, ["wrong", "123456"]).shown
             for name in ("alice", "pete", "eve")}
    assert len({tuple(s) for s in shown.values()}) == 1, shown


def test_unknown_user_with_factors_totp(world):
    r = login(world, "mallory", ["123456"], factors="totp")
    assert r.code == AUTH_ERR and r.prompts == [cv.CODE_PROMPT] and r.verifies == 0


def test_unknown_user_ignored_by_policy_only_without_a_password_factor(make_world):
    world = make_world(unknown_users="ignore")
    assert login(world, "sysuser", factors="totp").code == IGNORE
    assert login(world, "sysuser", [PASSWORD]).code == AUTH_ERR
    assert login(world, "sysuser", call="acct").code == IGNORE


# --- pending: enrollment at login -----------------------------------------------------

def enrollment_totp(run_steps) -> pyotp.TOTP:
    """The phone scanning the QR code: the URI shown in the enrollment text."""
    text = next(s.text for s in run_steps if isinstance(s, Info) and "URI: " in s.text)
    return pyotp.parse_uri(text.split("URI: ", 1)[1].split("\n", 1)[0])


def test_pending_shows_the_qr_code_and_skips_on_empty(world):
    world.add("pete", mfa="pending", days=7)
    r = login(world, "pete", [PASSWORD, ""])
    assert r.code == SUCCESS
    assert r.prompts == [cv.PASSWORD_PROMPT, cv.ENROLL_PROMPT]
    text = r.text()
    assert "7 day(s) left" in text and "\u2588" in text and "Or enter this key by hand" in text
    assert [s.echo for s in r.steps if isinstance(s, Prompt)] == [False, True]
    assert world.acc.state(rec(world, "pete")) is MfaState.PENDING
    assert "enrollment_skipped" in world.audit_events()


def test_pending_secret_is_kept_between_logins(world):
    world.add("pete", mfa="pending")
    first = enrollment_totp(login(world, "pete", [PASSWORD, ""]).steps)
    second = enrollment_totp(login(world, "pete", [PASSWORD, ""]).steps)
    assert first.secret == second.secret


def test_pending_completes_with_a_right_code(world):
    world.add("pete", mfa="pending")

    def phone(prompt, steps):
        if prompt.text == cv.PASSWORD_PROMPT:
            return PASSWORD
        if prompt.text == cv.ENROLL_PROMPT:
            return world.code(enrollment_totp(steps))
        assert prompt.text == cv.ACK_PROMPT
        return ""

    r = login(world, "pete", phone)
    assert r.code == SUCCESS
    assert r.prompts == [cv.PASSWORD_PROMPT, cv.ENROLL_PROMPT, cv.ACK_PROMPT]
    assert "Recovery codes" in r.text()
    record = rec(world, "pete")
    assert world.acc.state(record) is MfaState.ACTIVE and record.pending_secret is None
    assert world.store.recovery_codes_left("pete") == world.config.recovery_codes
    totp = enrollment_totp(r.steps)
    # the enrollment code's step is used: the same code cannot log in again
    assert login(world, "pete", [PASSWORD, world.code(totp)]).code == AUTH_ERR
    world.advance(30)
    assert login(world, "pete", [PASSWORD, world.code(totp)]).code == SUCCESS


def test_pending_wrong_codes_fail_and_change_nothing(world):
    world.add("pete", mfa="pending")
    attempts = world.config.enrollment_attempts
    r = login(world, "pete", [PASSWORD] + ["000000"] * attempts)
    assert r.code == AUTH_ERR and r.end.delay
    assert r.prompts.count(cv.ENROLL_PROMPT) == attempts
    assert sum(kind == "error" for kind, _ in r.shown) == attempts - 1
    record = rec(world, "pete")
    assert world.acc.state(record) is MfaState.PENDING and record.failed_count == 1


def test_expired_enrollment_is_refused(world):
    world.add("eve", mfa="expired")
    r = login(world, "eve", [PASSWORD])
    assert r.code == ACCT_EXPIRED
    assert cv.EXPIRED_TEXT in r.text()
    assert rec(world, "eve").failed_count == 0  # a right password is no failed attempt
    acct = login(world, "eve", call="acct")
    assert acct.code == ACCT_EXPIRED and cv.EXPIRED_TEXT in acct.text()


def test_pending_turns_expired_when_the_period_ends(world):
    world.add("pete", mfa="pending", days=2)
    world.advance(2 * policy.DAY + 1)
    assert login(world, "pete", [PASSWORD]).code == ACCT_EXPIRED


# --- lockout ----------------------------------------------------------------------------

def test_locked_user_is_refused_without_any_check(world):
    totp = world.add("alice")
    world.store.update("alice", locked_at=world.now(), lock_reason="test")
    r = login(world, "alice", [PASSWORD, world.code(totp)])
    assert r.code == MAXTRIES
    assert r.verifies == 0  # the password is never checked
    assert r.prompts == PW_CODE  # but asked, like any login
    assert "locked" in r.text()
    assert rec(world, "alice").last_step == -1  # the right code was not used up
    assert login(world, "alice", call="acct").code == PERM_DENIED


def test_wrong_attempts_lock_at_the_limit(make_world):
    world = make_world(max_attempts=3, unlock_after=0)
    totp = world.add("alice")
    codes = [login(world, "alice", [PASSWORD, world.wrong(totp)]) for _ in range(3)]
    assert [r.code for r in codes] == [AUTH_ERR] * 3
    assert "locked" in codes[-1].text()  # told at the attempt that locked
    r = login(world, "alice", [PASSWORD, world.code(totp)])
    assert r.code == MAXTRIES and r.verifies == 0
    assert world.audit_events().count("locked") == 1


def test_lock_lifts_after_unlock_after(make_world):
    world = make_world(max_attempts=1, unlock_after=600)
    totp = world.add("alice")
    assert login(world, "alice", [PASSWORD, world.wrong(totp)]).code == AUTH_ERR
    r = login(world, "alice", [PASSWORD, world.code(totp)])
    assert r.code == MAXTRIES and "try again in 10 min" in r.text()
    world.advance(601)
    assert login(world, "alice", [PASSWORD, world.code(totp)]).code == SUCCESS
    assert "unlocked" in world.audit_events()


def test_an_expired_lock_is_lifted_by_the_next_login_not_by_reads(make_world):
    """Reads (acct_mgmt, a refused auth's lookup) never write; the next auth lifts it."""
    world = make_world(max_attempts=1, unlock_after=600)
    totp = world.add("alice")
    assert login(world, "alice", [PASSWORD, world.wrong(totp)]).code == AUTH_ERR
    world.advance(601)
    assert login(world, "alice", call="acct").code == SUCCESS  # expired: not locked
    assert rec(world, "alice").locked_at is not None and "unlocked" not in world.audit_events()
    assert login(world, "alice", [PASSWORD, world.code(totp)]).code == SUCCESS
    assert rec(world, "alice").locked_at is None
    assert world.audit_events().count("unlocked") == 1


def test_self_service_proofs_and_logins_share_one_counter(make_world):
    """One lockout rule: a wrong code at `jctotp recovery-codes` and wrong logins add up."""
    world = make_world(max_attempts=3, unlock_after=0)
    totp = world.add("nobody")
    assert login(world, "nobody", [PASSWORD, world.wrong(totp)]).code == AUTH_ERR
    proof = drive(verbs.handle(world.acc, 65534, {"v": 1, "verb": "recovery-codes"}),
                  [world.wrong(totp)], world.directory)
    assert proof.end.exit == 1 and rec(world, "nobody").failed_count == 2
    assert login(world, "nobody", [PASSWORD, world.wrong(totp)]).code == AUTH_ERR
    assert rec(world, "nobody").locked_at is not None  # the third failure, whichever door
    locked = drive(verbs.handle(world.acc, 65534, {"v": 1, "verb": "passwd"}), [PASSWORD],
                   world.directory)
    assert locked.end.exit == ExitCode.LOCKED and locked.verifies == 0


def test_failures_outside_fail_interval_do_not_add_up(make_world):
    world = make_world(max_attempts=2, fail_interval=60)
    totp = world.add("alice")
    for _ in range(3):
        assert login(world, "alice", [PASSWORD, world.wrong(totp)]).code == AUTH_ERR
        world.advance(61)
    assert rec(world, "alice").locked_at is None
    assert login(world, "alice", [PASSWORD, world.code(totp)]).code == SUCCESS


@pytest.mark.parametrize("how", ["flag", "group"])
def test_admins_get_at_most_five_attempts(make_world, how):
    world = make_world(max_attempts=10, admin_groups=["sudo"],
                       groups={"root2": frozenset({"sudo"})} if how == "group" else {})
    totp = world.add("root2", admin=how == "flag", max_attempts=50)
    record = rec(world, "root2")
    assert policy.attempt_limit(record, world.config, world.acc.is_admin(record)) == 5
    for _ in range(5):
        assert login(world, "root2", [PASSWORD, world.wrong(totp)]).code == AUTH_ERR
    assert rec(world, "root2").locked_at is not None
    assert login(world, "root2", [PASSWORD, world.code(totp)]).code == MAXTRIES


def test_a_lower_admin_limit_stands(make_world):
    world = make_world(max_attempts=2)
    world.add("root2", admin=True)
    assert world.acc.limit(rec(world, "root2")) == 2


def test_per_user_limit_overrides_the_config(make_world):
    world = make_world(max_attempts=5)
    world.add("alice", max_attempts=1)
    assert world.acc.limit(rec(world, "alice")) == 1


# --- exemptions ----------------------------------------------------------------------

def test_exempt_group_skips_the_code_never_the_password(make_world):
    world = make_world(exempt_groups=["break-glass"],
                       groups={"alice": frozenset({"break-glass"})})
    world.add("alice")
    r = login(world, "alice", [PASSWORD, ""])
    assert r.code == SUCCESS and r.prompts == PW_CODE
    assert "exempted" in world.audit_events()
    assert login(world, "alice", ["wrong", ""]).code == AUTH_ERR


def test_exempt_group_with_factors_totp_is_no_opinion(make_world):
    world = make_world(exempt_groups=["break-glass"],
                       groups={"alice": frozenset({"break-glass"})})
    world.add("alice")
    assert login(world, "alice", [""], factors="totp").code == IGNORE


def test_exempt_user_may_still_give_a_code(make_world):
    world = make_world(exempt_groups=["ops"], groups={"alice": frozenset({"ops"})})
    totp = world.add("alice")
    assert login(world, "alice", [PASSWORD, world.code(totp)]).code == SUCCESS
    assert login(world, "alice", [PASSWORD, world.wrong(totp)]).code == AUTH_ERR


def test_exempt_pending_user_is_not_asked_to_enroll(make_world):
    world = make_world(exempt_groups=["ops"], groups={"pete": frozenset({"ops"})})
    world.add("pete", mfa="pending")
    r = login(world, "pete", [PASSWORD])
    assert r.code == SUCCESS and r.prompts == [cv.PASSWORD_PROMPT]


@pytest.mark.parametrize("rhost, exempt", [
    ("192.0.2.77", True), ("192.0.3.1", False), ("2001:db8::5", True),
    ("2001:db9::5", False), ("fe80::1%eth0", False), ("bastion.example", False), ("", False),
    ("::ffff:192.0.2.77", False),
])
def test_exempt_source(make_world, rhost, exempt):
    world = make_world(exempt_sources=["192.0.2.0/24", "2001:db8::/32"])
    world.add("alice")
    r = login(world, "alice", [PASSWORD, ""], rhost=rhost)
    assert r.code == (SUCCESS if exempt else AUTH_ERR)
    assert login(world, "alice", ["wrong", ""], rhost=rhost).code == AUTH_ERR


def test_exempt_source_with_factors_totp_is_no_opinion(make_world):
    world = make_world(exempt_sources=["10.0.0.0/8"])
    world.add("alice")
    assert login(world, "alice", [""], factors="totp", rhost="10.1.2.3").code == IGNORE


def test_exemption_does_not_open_a_locked_account(make_world):
    world = make_world(exempt_groups=["ops"], groups={"alice": frozenset({"ops"})})
    world.add("alice")
    world.store.update("alice", locked_at=world.now(), lock_reason="test")
    r = login(world, "alice", [PASSWORD, ""])
    assert r.code == MAXTRIES and r.verifies == 0


# --- pam_sm_acct_mgmt ------------------------------------------------------------------

def test_acct(world):
    world.add("alice")
    world.add("paula", mfa="off")
    world.add("pete", mfa="pending")
    for name in ("alice", "paula", "pete"):
        r = login(world, name, call="acct")
        assert r.code == SUCCESS and r.prompts == [] and r.verifies == 0
    assert login(world, "nobody-here", call="acct").code == USER_UNKNOWN


def test_acct_for_a_locked_user_says_so(world):
    world.add("alice")
    world.store.update("alice", locked_at=world.now(), lock_reason="test")
    r = login(world, "alice", call="acct")
    assert r.code == PERM_DENIED and r.shown[0][0] == "error" and "locked" in r.text()
    assert "acct_refused" in world.audit_events()


# --- audit_failure ---------------------------------------------------------------------

@pytest.mark.parametrize("policy_, expected", [("continue", SUCCESS), ("deny", AUTH_ERR)])
def test_an_unwritable_audit_log(make_world, tmp_path, policy_, expected):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    world = make_world(audit_failure=policy_, audit_log=str(blocker / "audit.jsonl"))
    totp = world.add("alice")
    assert login(world, "alice", [PASSWORD, world.code(totp)]).code == expected
