"""Issue 11's admin flows, issue 12's idempotent verbs and abandoned logins, sans I/O.

The same points through the real libpam are in tests/pam/test_flows.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyotp
import pytest
from harness import PASSWORD, drive

from pam_jctotp.core import login as cv
from pam_jctotp.core import verbs as control
from pam_jctotp.core.login import Login
from pam_jctotp.core.steps import Error, Info, Prompt, Result
from pam_jctotp.errors import DirectoryUnavailable, UsageError
from pam_jctotp.model import ExitCode, LoginRequest, MfaState, VerdictCode

DAY = 86400


def admin(world, verb: str, answers=(), **args) -> Result:
    end = drive(control.handle(world.acc, 0, {"v": 1, "verb": verb, "args": args}),
                answers, world.directory).end
    assert isinstance(end, Result)
    return end


def state(world, name: str) -> MfaState:
    return world.acc.state(world.store.get(name))


def audit(world) -> list[dict]:
    path = Path(world.config.audit_log)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def shown_key(steps) -> pyotp.TOTP:
    text = next(s.text for s in steps if isinstance(s, Info) and "URI: " in s.text)
    return pyotp.parse_uri(text.split("URI: ", 1)[1].split("\n", 1)[0])


def login_until(world, name: str, stop: str, answers: dict[str, str]):
    """Drive a login up to the prompt `stop`, then close it (the client left)."""
    req = LoginRequest(call="auth", service="sshd", user=name, factors="password,totp")
    conv = Login(world.acc, req).run()
    steps, value = [], None
    while True:
        step = conv.send(value)
        steps.append(step)
        value = None
        if isinstance(step, Prompt):
            if step.text == stop:
                conv.close()
                return steps
            value = answers[step.text] if step.text in answers else world.code(shown_key(steps))
        elif not isinstance(step, Info) and hasattr(step, "password"):
            value = world.directory.verify_password(step.user, step.password)


# --- abandoned conversations (issue 12 bug 8, issue 9 item 13) --------------------------

def test_leaving_at_press_enter_counts_nothing_commits_nothing_and_is_audited(world):
    world.add("pete", mfa="pending")
    login_until(world, "pete", cv.ACK_PROMPT, {cv.PASSWORD_PROMPT: PASSWORD})
    rec = world.store.get("pete")
    assert rec.failed_count == 0
    assert state(world, "pete") is MfaState.PENDING and rec.pending_secret is not None
    assert world.store.recovery_codes_left("pete") == 0
    assert world.audit_events()[-1] == "abandoned"


def test_leaving_after_a_wrong_password_still_counts(world):
    world.add("pete", mfa="pending")
    login_until(world, "pete", cv.CODE_PROMPT, {cv.PASSWORD_PROMPT: "wrong"})
    assert world.store.get("pete").failed_count == 1
    assert world.audit_events()[-1] == "abandoned"


def test_leaving_at_the_password_prompt_reserves_nothing(world):
    world.add("alice")
    login_until(world, "alice", cv.PASSWORD_PROMPT, {})
    assert world.store.get("alice").failed_count == 0
    assert world.audit_events()[-1] == "abandoned"


def test_a_finished_login_is_never_called_abandoned(world):
    world.add("paula", mfa="off")
    req = LoginRequest(call="auth", service="sshd", user="paula")
    assert drive(Login(world.acc, req).run(), [PASSWORD], world.directory).code == \
        VerdictCode.SUCCESS
    assert "abandoned" not in world.audit_events()


def test_a_password_reset_during_press_enter_withdraws_the_key(world):
    world.add("pete", mfa="pending")

    def person(prompt, steps):
        if prompt.text == cv.PASSWORD_PROMPT:
            return PASSWORD
        if prompt.text == cv.ACK_PROMPT:
            world.acc.password_changed("pete", "root")  # an admin passwd meanwhile
            return ""
        return world.code(shown_key(steps))

    req = LoginRequest(call="auth", service="sshd", user="pete")
    r = drive(Login(world.acc, req).run(), person, world.directory)
    assert r.code == VerdictCode.AUTH_ERR and state(world, "pete") is MfaState.PENDING
    assert world.store.get("pete").failed_count == 0  # the right password: not a guess


def test_an_admins_own_password_change_keeps_their_totp(world):
    """Another admin's reset also resets an admin's TOTP key; one's own does not."""
    world.add("root", admin=True)
    world.add("boss", admin=True)
    assert admin(world, "passwd.admin", name="root", password="a new long password").exit == 0
    assert state(world, "root") is MfaState.ACTIVE
    assert admin(world, "passwd.admin", name="boss", password="a new long password").exit == 0
    assert state(world, "boss") is MfaState.ENROLL_NOW


# --- enroll now ---------------------------------------------------------------------------

def test_enroll_now_has_no_skip_and_the_account_stack_refuses(world):
    world.add("erin", mfa="off")
    assert admin(world, "mfa.enable", names=["erin"], enroll_now=True).data["changed"]
    assert state(world, "erin") is MfaState.ENROLL_NOW
    req = LoginRequest(call="auth", service="sshd", user="erin")
    r = drive(Login(world.acc, req).run(), [PASSWORD, "", "", ""], world.directory)
    assert r.code == VerdictCode.AUTH_ERR
    assert r.prompts == [cv.PASSWORD_PROMPT] + [cv.ENROLL_NOW_PROMPT] * 3
    acct = drive(Login(world.acc, LoginRequest(call="acct", service="sshd", user="erin")).run())
    assert acct.code == VerdictCode.PERM_DENIED


@pytest.mark.parametrize("verb", ["mfa.enable", "mfa.reset", "unlock"])
def test_enroll_now_and_enrollment_days_exclude_each_other(world, verb):
    world.add("erin", mfa="expired")
    with pytest.raises(UsageError, match="exclude"):
        admin(world, verb, names=["erin"], enroll_now=True, enrollment_days=3)


def test_zero_days_names_enroll_now(world):
    world.add("erin", mfa="off")
    with pytest.raises(UsageError, match="--enroll-now"):
        admin(world, "mfa.enable", names=["erin"], enrollment_days=0)


# --- unlock --------------------------------------------------------------------------------

def test_unlock_of_an_expired_enrollment_renews_the_period(world):
    world.add("eve", mfa="expired")
    shown = admin(world, "user.show", name="eve").data
    assert shown["locked"] is True and shown["lock_reason"] == "enrollment expired"
    r = admin(world, "unlock", names=["eve"])
    assert r.data["changed"] is True and "7 day(s) to enroll" in r.message
    assert "unlocked (password" not in r.message  # says only what it did
    assert state(world, "eve") is MfaState.PENDING
    assert world.acc.days_left(world.store.get("eve")) == world.config.default_enrollment_days


def test_unlock_of_a_locked_user_past_the_deadline_lifts_both(make_world):
    """Issue 20 (a planted bug survived): locked by failures AND past the enrollment
    deadline. One unlock lifts the lock and renews the period: the user then logs
    in and enrolls (lifting only the lock left them refused)."""
    world = make_world(max_attempts=2)
    world.add("eve", mfa="expired")
    req = LoginRequest(call="auth", service="sshd", user="eve", factors="password,totp")
    for _ in range(2):
        assert drive(cv.Login(world.acc, req).run(), ["wrong", "000000"], world.directory).code == \
            VerdictCode.AUTH_ERR
    assert world.store.get("eve").locked_at is not None
    r = admin(world, "unlock", names=["eve"])
    assert r.data["changed"] is True
    assert "unlocked (password" in r.message and "enrollment period renewed" in r.message
    assert world.store.get("eve").locked_at is None and state(world, "eve") is MfaState.PENDING

    def phone(prompt, steps):
        if prompt.text == cv.PASSWORD_PROMPT:
            return PASSWORD
        if prompt.text == cv.ENROLL_PROMPT:
            return world.code(shown_key(steps))
        return ""

    run = drive(cv.Login(world.acc, req).run(), phone, world.directory)
    assert run.code == VerdictCode.SUCCESS and state(world, "eve") is MfaState.ACTIVE


def test_unlock_of_an_unlocked_user_says_so_and_audits_nothing(world):
    world.add("alice")
    before = audit(world)
    r = admin(world, "unlock", names=["alice"])
    assert r.data["changed"] is False and "not locked" in r.message
    assert audit(world) == before


def test_unlock_twice(world):
    world.add("alice")
    world.store.update("alice", locked_at=world.now(), lock_reason="too many attempts")
    assert admin(world, "unlock", names=["alice"]).data["changed"] is True
    assert admin(world, "unlock", names=["alice"]).data["changed"] is False


# --- admins: no grace ----------------------------------------------------------------------

@pytest.mark.parametrize("verb", ["mfa.enable", "mfa.reset"])
def test_admins_get_no_enrollment_period(world, verb):
    world.add("boss", admin=True, mfa="off" if verb == "mfa.enable" else "active")
    world.add("pleb", mfa="off" if verb == "mfa.enable" else "active")
    before = [world.store.get(n) for n in ("boss", "pleb")]
    with pytest.raises(UsageError, match="boss: admins get no enrollment period"):
        admin(world, verb, names=["pleb", "boss"], enrollment_days=5)
    assert [world.store.get(n) for n in ("boss", "pleb")] == before  # nothing changed
    admin(world, verb, names=["pleb", "boss"])
    assert state(world, "boss") is MfaState.ENROLL_NOW
    assert state(world, "pleb") is MfaState.PENDING


def test_admins_by_group_get_no_grace_either(make_world):
    world = make_world(admin_groups=["wheel"], groups={"ops": frozenset({"wheel"})})
    world.add("ops", mfa="off")
    admin(world, "mfa.enable", names=["ops"])
    assert state(world, "ops") is MfaState.ENROLL_NOW


def test_compromised_reset(world):
    world.add("gina")
    with pytest.raises(UsageError, match="compromised"):
        admin(world, "mfa.reset", names=["gina"], compromised=True, enrollment_days=3)
    admin(world, "mfa.reset", names=["gina"], compromised=True)
    assert state(world, "gina") is MfaState.ENROLL_NOW
    event = [e for e in audit(world) if e["event"] == "mfa_reset"][-1]
    assert event["compromised"] is True and event["reason"] == "compromised"
    assert event["enroll_now"] is True


def test_reset_of_a_locked_user_lifts_the_lock_and_audits_both(world):
    world.add("hugo")
    world.store.update("hugo", locked_at=world.now(), lock_reason="too many attempts")
    r = admin(world, "mfa.reset", names=["hugo"])
    assert "lock was lifted" in r.message and world.store.get("hugo").locked_at is None
    assert [e["event"] for e in audit(world)][-2:] == ["mfa_reset", "unlocked"]


# --- idempotent verbs (issue 12) -------------------------------------------------------------

def test_mfa_enable_keeps_a_pending_deadline_unless_told(world):
    world.add("pia", mfa="pending", days=5)
    world.advance(2 * DAY)
    r = admin(world, "mfa.enable", names=["pia"])
    assert r.data["changed"] is False and "nothing changed" in r.message
    assert world.acc.days_left(world.store.get("pia")) == 3
    assert admin(world, "mfa.enable", names=["pia"], enrollment_days=9).data["changed"]
    assert world.acc.days_left(world.store.get("pia")) == 9


@pytest.mark.parametrize("verb, args, setup", [
    ("mfa.enable", {"names": ["bob"]}, "off"),
    ("mfa.enable", {"names": ["bob"], "enroll_now": True}, "off"),
    ("mfa.disable", {"names": ["bob"]}, "active"),
    ("user.set", {"name": "bob", "email": "bob@example.org", "admin": True}, "off"),
    ("user.set", {"name": "bob", "max_attempts": 3}, "off"),
    ("user.add", {"name": "zed", "password": PASSWORD, "exist_ok": True,
                  "system_account": False}, "off"),
])
def test_each_idempotent_verb_twice(world, verb, args, setup):
    world.add("bob", mfa=setup)
    first = admin(world, verb, **args)
    events = len(audit(world))
    second = admin(world, verb, **args)
    assert (first.exit, second.exit) == (ExitCode.OK, ExitCode.OK)
    assert (first.data["changed"], second.data["changed"]) == (True, False)
    assert len(audit(world)) == events  # a run that changes nothing audits nothing


def test_user_add_exist_ok_refuses_a_different_user(world):
    world.add("bob", mfa="off")
    r = admin(world, "user.add", name="bob", password="another pw", exist_ok=True, admin=True,
              system_account=False)
    assert r.exit == ExitCode.REFUSED and "admin flag and password" in r.message


# --- e-mail and booleans --------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["bob", "bob@", "@x.org", "bob@localhost", "a b@x.org",
                                 "bob@x.org:1", "b\n@x.org", "é@x.org", "b" * 90 + "@x.org.xyz",
                                 5])
def test_email_shape_is_checked(world, bad):
    world.add("bob", mfa="off")
    with pytest.raises(UsageError, match="e-mail"):
        admin(world, "user.set", name="bob", email=bad)
    assert world.store.get("bob").email is None


def test_email_in_the_account_label_falls_back_to_user_at_host(make_world):
    world = make_world(account_name="{email}")
    world.add("bob", mfa="off")
    world.add("amy", mfa="off")
    admin(world, "user.set", name="bob", email="bob@example.org")
    assert world.acc.account_label("bob") == "bob@example.org"
    assert world.acc.account_label("amy") == f"amy@{world.acc.host}"
    assert admin(world, "user.show", name="bob").data["email"] == "bob@example.org"
    admin(world, "user.set", name="bob", email="")
    assert world.store.get("bob").email is None


def test_every_boolean_in_show_is_a_bool(world):
    world.add("boss", admin=True)
    shown = admin(world, "user.show", name="boss").data
    for key in ("admin", "mfa_required", "locked", "has_password"):
        assert type(shown[key]) is bool, key


def test_show_says_where_the_password_is_checked(world):
    world.add("pat")
    world.add("sam", password=None, mfa="off")
    pat = admin(world, "user.show", name="pat").data
    sam = admin(world, "user.show", name="sam").data
    assert (pat["password"], pat["has_password"]) == ("local", True)
    assert (sam["password"], sam["has_password"]) == ("not set", False)


def test_admin_reports_do_without_an_unreachable_directory(make_world, monkeypatch):
    """The list is the store's: a directory outage warns once and groups come from NSS."""
    world = make_world(groups={"boss": frozenset({"wheel"})}, admin_groups=["wheel"])
    world.add("amy")
    world.add("boss")
    asked = []

    def down(name):
        asked.append(name)
        raise DirectoryUnavailable("the directory is unavailable (test)")

    monkeypatch.setattr(world.acc, "groups_of", down)
    ends = []
    for verb, args in (("user.list", {}), ("user.show", {"name": "boss"})):
        run = drive(control.handle(world.acc, 0, {"v": 1, "verb": verb, "args": args}))
        warnings = [s.text for s in run.steps if isinstance(s, Error)]
        assert isinstance(run.end, Result) and run.end.exit == ExitCode.OK
        assert warnings == ["warning: the directory is unavailable (test): admin and "
                            "attempts left come from local (NSS) groups only"]
        ends.append(run.end.data)
    assert asked == ["amy", "boss"]   # once per report, not once per user
    assert [u["admin"] for u in ends[0]] == [False, True] and ends[1]["admin"]  # NSS wheel


def test_no_recovery_codes_no_block_no_prompt(make_world):
    world = make_world(recovery_codes=0)
    world.add("pete", mfa="pending")

    def phone(prompt, steps):
        return PASSWORD if prompt.text == cv.PASSWORD_PROMPT else world.code(shown_key(steps))

    req = LoginRequest(call="auth", service="sshd", user="pete")
    r = drive(Login(world.acc, req).run(), phone, world.directory)
    assert r.code == VerdictCode.SUCCESS
    assert r.prompts == [cv.PASSWORD_PROMPT, cv.ENROLL_PROMPT]
    assert "Recovery codes" not in r.text()
