"""Self-service verbs of the control socket, for the uid the kernel reports.

Every proof of identity (a current code, the current password) is an attempt
like a login's, through core/lockout.py; a new key is confirmed through the
same enrollment sub-conversation as the login's.
"""

from __future__ import annotations

from typing import Any

from ..model import CodeOutcome, ExitCode, MfaState, Refusal, UserRecord
from ..secret import Secret
from . import enrollment, lockout
from .accounts import Accounts
from .enrollment import Outcome
from .lockout import Attempt
from .report import summary
from .steps import Check, Conversation, Info, Prompt, Result, SetPassword, VerifyPassword
from .totp import Totp
from .verbargs import new_password, user

LOCKED = Result(ExitCode.LOCKED, "Your account is locked. Contact your administrator.",
                delay=True)


def _prove(acc: Accounts, rec: UserRecord, what: str, attempt: Attempt | None = None) -> Check:
    """Ask for a current code (or a recovery code); an attempt like a login's
    (`attempt`: the caller already reserved it, e.g. for the password).

    Sends True on success; on failure ends the conversation itself.
    """
    if attempt is None:
        attempt = lockout.begin(acc, rec)
        if attempt is None:
            yield LOCKED
            return False
    answer = yield Prompt(f"Current verification code (or a recovery code) {what}: ")
    check = acc.check_code(rec, answer, consume=True)
    if check.ok:
        lockout.succeeded(acc, attempt)
        if check.reason is CodeOutcome.RECOVERY:
            acc.audit("recovery_code_used", rec.name, actor=rec.name)
        return True
    if check.reason is CodeOutcome.REPLAY:
        acc.audit("replay_refused", rec.name, actor=rec.name)
    lockout.failed(acc, attempt)
    acc.audit("login_fail", rec.name, service="jctotp", reason=check.reason)
    yield Result(ExitCode.REFUSED, "That code is not right; nothing was changed.", delay=True)
    return False


def _confirm_new_secret(acc: Accounts, rec: UserRecord, secret: Secret, event: str,
                        pending: bytes | None = None) -> Conversation:
    outcome = yield from enrollment.confirm(acc, rec.name, secret, pending=pending)
    if outcome is not Outcome.ENROLLED:
        yield Result(ExitCode.REFUSED,
                     "No right code: nothing was changed (your previous state stays).",
                     delay=outcome is Outcome.FAILED)
        return
    acc.audit(event, rec.name, actor=rec.name)
    codes = acc.store.recovery_codes_left(rec.name)
    yield Result(message="Multi-factor authentication is active with the new key.",
                 data={"changed": True, "recovery_codes": codes})


def self_status(acc: Accounts, rec: UserRecord, args: dict[str, Any]) -> Conversation:
    yield Result(data=summary(acc, rec))


def self_setup(acc: Accounts, rec: UserRecord, args: dict[str, Any]) -> Conversation:
    if acc.is_locked(rec):
        yield Result(ExitCode.LOCKED, LOCKED.message)
        return
    state = acc.state(rec)
    if state is MfaState.ACTIVE:
        yield Result(ExitCode.REFUSED,
                     "You are already enrolled; use `jctotp reset` for a new phone.")
        return
    if state is MfaState.EXPIRED:
        yield Result(ExitCode.REFUSED,
                     "Your enrollment period has ended; ask an administrator to reset it.")
        return
    secret, sealed = acc.pending_key(rec)
    yield from _confirm_new_secret(acc, rec, secret, "enrolled", pending=sealed)


def self_reset(acc: Accounts, rec: UserRecord, args: dict[str, Any]) -> Conversation:
    if acc.state(rec) is not MfaState.ACTIVE:
        yield Result(ExitCode.REFUSED, "You have no authenticator to reset; use `jctotp setup`.")
        return
    if not (yield from _prove(acc, rec, "from your current authenticator")):
        return
    # The new secret lives only in this conversation until confirmed: quitting
    # half-way leaves the old one in place.
    yield from _confirm_new_secret(acc, rec, Totp.new_secret(), "mfa_reset")


def self_recovery_codes(acc: Accounts, rec: UserRecord, args: dict[str, Any]) -> Conversation:
    if acc.state(rec) is not MfaState.ACTIVE:
        yield Result(ExitCode.REFUSED,
                     "Recovery codes need an active authenticator; run `jctotp setup`.")
        return
    if not (yield from _prove(acc, rec, "to make new recovery codes")):
        return
    codes = acc.recovery_codes()
    if not codes:
        yield Result(ExitCode.REFUSED, "Recovery codes are turned off here (recovery_codes: 0).")
        return
    # Shown before they replace the old ones: a request cut half-way changes nothing.
    yield Info(acc.recovery_text(codes))
    yield Prompt(enrollment.ACK_PROMPT, echo=True)
    acc.replace_recovery_codes(rec.name, codes)
    acc.audit("recovery_codes_regenerated", rec.name, actor=rec.name)
    yield Result(message="New recovery codes made; the old ones no longer work.",
                 data={"changed": True, "recovery_codes": len(codes)})


def self_passwd(acc: Accounts, rec: UserRecord, args: dict[str, Any]) -> Conversation:
    current = Secret((yield Prompt("Current password: ")))
    attempt = lockout.begin(acc, rec) if not acc.is_locked(rec) else None
    if attempt is None:
        yield LOCKED
        return
    if not (yield VerifyPassword(rec.name, current)):
        lockout.failed(acc, attempt)
        acc.audit("login_fail", rec.name, service="jctotp", reason=Refusal.WRONG_PASSWORD)
        yield Result(ExitCode.REFUSED, "That password is not right; nothing was changed.",
                     delay=True)
        return
    # One attempt covers password and code, as in a login: resetting the
    # counter between them would give unlimited code guesses to anyone
    # who knows the password.
    if acc.state(rec) is MfaState.ACTIVE:
        if not (yield from _prove(acc, rec, "to confirm", attempt)):
            return
    else:
        lockout.succeeded(acc, attempt)
    new = yield Prompt("New password: ")
    again = yield Prompt("New password again: ")
    if new != again:
        yield Result(ExitCode.USAGE, "The two new passwords differ; nothing was changed.")
        return
    yield SetPassword(rec.name, new_password({"password": new}), old=current)
    acc.password_changed(rec.name, rec.name)
    yield Result(message="Password changed.", data={"changed": True})


def self_break_glass(acc: Accounts, rec: UserRecord, args: dict[str, Any]) -> Conversation:
    yield from keep_verifier(acc, rec, rec.name)


def admin_break_glass(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    yield from keep_verifier(acc, user(acc, args.get("name")), actor)


def keep_verifier(acc: Accounts, rec: UserRecord, actor: str) -> Conversation:
    """`jctotp break-glass`: a break_glass_group member who logs in with key + code has
    no verifier of their directory password on this host (directory/offline.py), so a
    directory outage would refuse them. Asks that password, checks it against the
    directory (a wrong one is a failed attempt like a login's, with its fail_delay),
    and the directory's check writes the verifier. A right password alone never resets
    the failure counter (the code is not asked): the attempt is given back instead."""
    state = getattr(acc.directory, "break_glass_state", None)
    group = acc.config.break_glass_group
    if state is None or group is None:
        yield Result(ExitCode.REFUSED, "This host keeps no break-glass password verifiers "
                     "(they need an LDAP directory and break_glass_group).")
        return
    if not state(rec.name)[0]:
        yield Result(ExitCode.REFUSED, f"{rec.name} is not in break_glass_group ({group}) "
                     "on this host: a verifier would never be used.")
        return
    whose = "Your" if actor == rec.name else f"{rec.name}'s"
    password = Secret((yield Prompt(f"{whose} directory password: ")))
    attempt = lockout.begin(acc, rec) if not acc.is_locked(rec) else None
    if attempt is None:
        yield LOCKED
        return
    started = acc.now()
    try:
        ok = yield VerifyPassword(rec.name, password)
        if not ok:
            lockout.failed(acc, attempt)
            acc.audit("login_fail", rec.name, service="jctotp", actor=actor,
                      reason=Refusal.WRONG_PASSWORD)
            yield Result(ExitCode.REFUSED, "That password is not right; nothing was "
                         "changed.", delay=True)
            return
    finally:
        lockout.release(acc, attempt)   # a right password alone: counted as nothing
    written = state(rec.name)[1]
    if written is None or written < started:
        # the directory is down: the password matched the verifier this host has
        yield Result(ExitCode.UNAVAILABLE, "The directory is unavailable: the password "
                     "matches this host's verifier, but a new one is written only when the "
                     "directory answers; nothing was changed.")
        return
    acc.audit("break_glass_verifier", rec.name, actor=actor)
    hours = acc.config.break_glass_password_max_age / 3600
    yield Result(message=f"This host keeps a verifier of {whose.lower()} directory password "
                 f"now: while the directory is down, {rec.name} can log in here with it and "
                 f"a code for {hours:g} h (break_glass_password_max_age); each password login here "
                 "renews it.", data={"changed": True, "written_at": written})
