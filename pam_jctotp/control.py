"""CLI verbs on the control socket: admin verbs for root, self-service for everyone.

Who asks comes from SO_PEERCRED (the uid the kernel reports), never from the
request. Bulk verbs check every name first and change nothing if one is bad.
Each verb is a conversation (steps.py), so interactive ones (setup, reset,
passwd) are tested like logins.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from . import audit as auditlog
from . import policy, system
from .accounts import Accounts
from .errors import NotFound, PermissionDenied, UsageError
from .policy import MfaState
from .secret import Secret
from .steps import Check, Conversation, Error, HashPassword, Info, Prompt, Result, VerifyPassword
from .store import UserRecord
from .totp import Totp

log = logging.getLogger("jctotpd")

MIN_PASSWORD = 8


def iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def summary(acc: Accounts, rec: UserRecord) -> dict[str, Any]:
    """What `user show`/`list`/`status` report (no secrets, no hashes)."""
    admin = acc.is_admin(rec)
    limit = acc.limit(rec)
    now = acc.now()
    in_window = (rec.fail_window_start is not None
                 and rec.fail_window_start > now - acc.config.fail_interval)
    failed = rec.failed_count if in_window else 0
    state = acc.state(rec)
    return {
        "name": rec.name,
        "admin": admin,
        "mfa": state.value,
        "mfa_required": bool(rec.mfa_required),
        "enrollment_deadline": iso(rec.enroll_deadline) if state in (
            MfaState.PENDING, MfaState.EXPIRED) else None,
        "days_left": acc.days_left(rec) if state is MfaState.PENDING else None,
        "enrolled_at": iso(rec.enrolled_at),
        "recovery_codes_left": acc.store.recovery_codes_left(rec.name),
        "locked": rec.locked_at is not None,
        "locked_since": iso(rec.locked_at),
        "lock_reason": rec.lock_reason,
        "locked_until": iso(policy.locked_until(rec, acc.config)) if rec.locked_at else None,
        "failed_attempts": failed,
        "max_attempts": limit,
        "attempts_left": 0 if rec.locked_at is not None else max(0, limit - failed),
        "has_password": rec.password_hash is not None,
    }


# --- argument checking -----------------------------------------------------

def _arg(args: dict[str, Any], key: str, kind: type, default: Any = ...) -> Any:
    if key not in args or args[key] is None:
        if default is ...:
            raise UsageError(f"missing argument {key!r}")
        return default
    value = args[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise UsageError(f"argument {key!r} must be {kind.__name__}")
    return value


def _days(args: dict[str, Any], default: int | None) -> int:
    days = _arg(args, "enrollment_days", int, default)
    if days is None or not 1 <= days <= 365:
        raise UsageError(f"--enrollment-days must be between 1 and 365 (got {days})")
    return days


def _names(acc: Accounts, args: dict[str, Any]) -> list[UserRecord]:
    names = _arg(args, "names", list)
    if not names:
        raise UsageError("name at least one user")
    records = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise UsageError("user names must not be empty")
        rec = acc.get(name)
        if rec is None:
            raise NotFound(f"no such user {name!r} (nothing was changed)")
        records.append(rec)
    return records


def _user(acc: Accounts, name: Any) -> UserRecord:
    if not isinstance(name, str) or not name:
        raise UsageError("name a user")
    rec = acc.get(name)
    if rec is None:
        raise NotFound(f"no such user {name!r}")
    return rec


def _new_password(args: dict[str, Any]) -> Secret:
    password = _arg(args, "password", str)
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"passwords need at least {MIN_PASSWORD} characters")
    if "\n" in password or "\0" in password:
        raise UsageError("passwords must not contain newlines or NUL")
    return Secret(password)


# --- admin verbs -------------------------------------------------------------

def user_add(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    name = system.check_name(_arg(args, "name", str))
    is_admin = _arg(args, "admin", bool, False)
    mfa = _arg(args, "mfa", bool, False)
    pw_hash = None
    if args.get("password") is not None:
        pw_hash = yield HashPassword(_new_password(args))
    if acc.store.get(name) is not None:
        raise UsageError(f"user {name!r} already exists")
    created = False
    if _arg(args, "system_account", bool, acc.config.create_system_accounts):
        created = system.create_account(name)
    secret = Totp.new_secret() if mfa else None
    with acc.store.transaction():
        acc.store.add(name, is_admin=is_admin, password_hash=pw_hash, now=acc.now())
        codes = acc.activate(name, secret, None) if secret else []
        if secret:
            acc.store.update(name, mfa_required=1)
    acc.audit("user_added", name, actor=actor, admin=is_admin or None)
    data: dict[str, Any] = {"name": name, "admin": is_admin, "system_account_created": created}
    message = f"Added user {name}" + (" (admin)" if is_admin else "") + "."
    if secret:
        acc.audit("mfa_enabled", name, actor=actor, reason="enrolled by admin")
        data.update(otpauth_uri=acc.otpauth_uri(name, secret), recovery_codes=codes)
        yield Info(acc.enrollment_text(name, secret) + acc.recovery_text(codes)
                   + "Hand these to the user over a safe channel; they are not shown again.")
    yield Result(0, message, data)


def user_list(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    yield Result(0, "", [summary(acc, r) for r in acc.store.list()])


def user_show(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    yield Result(0, "", summary(acc, _user(acc, args.get("name"))))


def user_set(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    rec = _user(acc, args.get("name"))
    changes: dict[str, Any] = {}
    if "max_attempts" in args:
        value = args["max_attempts"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 1 <= value <= 100):
            raise UsageError("--max-attempts must be between 1 and 100 (or 'default')")
        changes["max_attempts"] = value
    if "admin" in args:
        changes["is_admin"] = int(_arg(args, "admin", bool))
    if not changes:
        raise UsageError("nothing to change (try --max-attempts N or --admin/--no-admin)")
    acc.store.update(rec.name, **changes)
    acc.audit("user_changed", rec.name, actor=actor,
              reason=", ".join(f"{k}={v}" for k, v in changes.items()))
    yield Result(0, f"Updated {rec.name}.", summary(acc, acc.get(rec.name) or rec))


def user_remove(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    rec = _user(acc, args.get("name"))
    acc.store.delete(rec.name)
    acc.audit("user_removed", rec.name, actor=actor)
    yield Result(0, f"Removed {rec.name} from the directory (the Linux account is kept).")


def mfa_enable(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    days = _days(args, acc.config.default_enrollment_days)
    records = _names(acc, args)
    done = []
    for rec in records:
        if acc.state(rec) is MfaState.ACTIVE:
            acc.store.update(rec.name, mfa_required=1)
        else:
            acc.store.update(rec.name, mfa_required=1,
                             enroll_deadline=acc.now() + days * policy.DAY)
        acc.audit("mfa_enabled", rec.name, actor=actor, enrollment_days=days)
        done.append(summary(acc, acc.get(rec.name) or rec))
    yield Result(0, f"MFA required for {', '.join(r.name for r in records)}; "
                 f"{days} day(s) to enroll.", done)


def mfa_reset(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    days = _days(args, acc.config.default_enrollment_days)
    records = _names(acc, args)
    for rec in records:
        acc.start_enrollment(rec.name, days)
        acc.audit("mfa_reset", rec.name, actor=actor, enrollment_days=days)
    yield Result(0, f"MFA reset for {', '.join(r.name for r in records)}; they enroll at "
                 f"their next login within {days} day(s).",
                 [summary(acc, acc.get(r.name) or r) for r in records])


def mfa_disable(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    records = _names(acc, args)
    for rec in records:
        with acc.store.transaction():
            acc.store.update(rec.name, mfa_required=0, totp_secret=None, pending_secret=None,
                             enroll_deadline=None, enrolled_at=None)
            acc.store.clear_recovery_codes(rec.name)
        acc.audit("mfa_disabled", rec.name, actor=actor)
    yield Result(0, f"MFA disabled for {', '.join(r.name for r in records)}.")


def unlock(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    records = _names(acc, args)
    for rec in records:
        acc.unlock(rec.name)
        acc.audit("unlocked", rec.name, actor=actor)
    yield Result(0, f"Unlocked {', '.join(r.name for r in records)} "
                 "(password and authenticator unchanged).")


def admin_passwd(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    rec = _user(acc, args.get("name"))
    pw_hash = yield HashPassword(_new_password(args))
    acc.store.update(rec.name, password_hash=pw_hash)
    acc.audit("password_changed", rec.name, actor=actor)
    message = f"Password of {rec.name} set."
    if acc.is_admin(rec) and rec.name != actor:
        # As JumpCloud does: another admin resetting an admin's password also
        # resets their TOTP key, so a stolen admin session cannot keep both.
        acc.start_enrollment(rec.name, acc.config.default_enrollment_days)
        acc.audit("mfa_reset", rec.name, actor=actor, reason="admin password reset")
        message += (f" {rec.name} is an admin: their TOTP key was reset too; they enroll "
                    f"again at next login within {acc.config.default_enrollment_days} day(s).")
    yield Result(0, message, summary(acc, acc.get(rec.name) or rec))


def audit_read(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    user = _arg(args, "user", str, None)
    since = args.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))):
        raise UsageError("since must be a timestamp")
    events = list(auditlog.read(acc.config.audit_log, user, since))
    yield Result(0, "", events[-int(_arg(args, "limit", int, 10000)):])


def clock_set(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    offset = args.get("offset")
    if isinstance(offset, bool) or not isinstance(offset, (int, float)):
        raise UsageError("offset must be a number of seconds")
    if not acc.clock.controllable:
        raise PermissionDenied("clock control is off (it is for the test suite only)")
    acc.clock.set_offset(offset)
    yield Result(0, f"clock offset {offset}s")


# --- self-service -------------------------------------------------------------

def _prove(acc: Accounts, rec: UserRecord, what: str, reserved: bool = False) -> Check:
    """Ask for a current code (or a recovery code); counts as an attempt like a login
    (`reserved`: the caller already counted this attempt).

    Sends True on success; on failure ends the conversation itself.
    """
    limit = acc.limit(rec)
    if not reserved and acc.store.reserve_attempt(rec.name, acc.now(), acc.config.fail_interval,
                                                  limit) is None:
        acc.lock_if_exhausted(rec.name, limit)
        yield Result(5, "Your account is locked. Contact your administrator.", delay=True)
        return False
    secret = acc.active_secret(rec)
    assert secret is not None
    answer = yield Prompt(f"Current verification code (or a recovery code) {what}: ")
    check = acc.check_code(rec, secret, answer, consume=True)
    if check.ok:
        acc.store.reset_failures(rec.name)
        if check.reason == "recovery":
            acc.audit("recovery_code_used", rec.name, actor=rec.name)
        return True
    if check.reason == "replay":
        acc.audit("replay_refused", rec.name, actor=rec.name)
    acc.lock_if_exhausted(rec.name, limit)
    acc.audit("login_fail", rec.name, service="jctotp", reason=check.reason)
    yield Result(1, "That code is not right; nothing was changed.", delay=True)
    return False


def _confirm_new_secret(acc: Accounts, rec: UserRecord, secret: Secret,
                        event: str) -> Conversation:
    yield Info(acc.enrollment_text(rec.name, secret))
    for attempt in range(acc.config.enrollment_attempts):
        answer = (yield Prompt("Enter the 6-digit code your app shows for the new key: ",
                               echo=True)).strip()
        step = acc.totp.match(secret, answer, acc.now()) if answer else None
        if step is not None:
            codes = acc.activate(rec.name, secret, step)
            acc.audit(event, rec.name, actor=rec.name)
            yield Info(acc.recovery_text(codes))
            yield Result(0, "Multi-factor authentication is active with the new key.",
                         {"recovery_codes": len(codes)})
            return
        if attempt + 1 < acc.config.enrollment_attempts:
            yield Error("That code is not right; try the current one.")
    yield Result(1, "No right code: nothing was changed (your previous state stays).",
                 delay=True)


def _self(acc: Accounts, uid: int) -> UserRecord:
    name = system.uid_to_name(uid)
    rec = acc.get(name) if name else None
    if rec is None:
        raise NotFound(f"you (uid {uid}) are not in the jctotp directory; ask an admin")
    return rec


def self_status(acc: Accounts, rec: UserRecord, args: dict[str, Any]) -> Conversation:
    yield Result(0, "", summary(acc, rec))


def self_setup(acc: Accounts, rec: UserRecord, args: dict[str, Any]) -> Conversation:
    if rec.locked_at is not None:
        yield Result(5, "Your account is locked. Contact your administrator.")
        return
    state = acc.state(rec)
    if state is MfaState.ACTIVE:
        yield Result(1, "You are already enrolled; use `jctotp reset` for a new phone.")
        return
    if state is MfaState.EXPIRED:
        yield Result(1, "Your enrollment period has ended; ask an administrator to reset it.")
        return
    yield from _confirm_new_secret(acc, rec, acc.pending_secret(rec), "enrolled")


def self_reset(acc: Accounts, rec: UserRecord, args: dict[str, Any]) -> Conversation:
    if acc.state(rec) is not MfaState.ACTIVE:
        yield Result(1, "You have no authenticator to reset; use `jctotp setup`.")
        return
    if not (yield from _prove(acc, rec, "from your current authenticator")):
        return
    # The new secret lives only in this conversation until confirmed: quitting
    # half-way leaves the old one in place.
    yield from _confirm_new_secret(acc, rec, Totp.new_secret(), "mfa_reset")


def self_recovery_codes(acc: Accounts, rec: UserRecord, args: dict[str, Any]) -> Conversation:
    if acc.state(rec) is not MfaState.ACTIVE:
        yield Result(1, "Recovery codes need an active authenticator; run `jctotp setup`.")
        return
    if not (yield from _prove(acc, rec, "to make new recovery codes")):
        return
    codes = acc.new_recovery_codes(rec.name)
    acc.audit("recovery_codes_regenerated", rec.name, actor=rec.name)
    yield Info(acc.recovery_text(codes))
    yield Result(0, "New recovery codes made; the old ones no longer work.",
                 {"recovery_codes": len(codes)})


def self_passwd(acc: Accounts, rec: UserRecord, args: dict[str, Any]) -> Conversation:
    current = Secret((yield Prompt("Current password: ")))
    limit = acc.limit(rec)
    if rec.locked_at is not None or acc.store.reserve_attempt(
            rec.name, acc.now(), acc.config.fail_interval, limit) is None:
        yield Result(5, "Your account is locked. Contact your administrator.", delay=True)
        return
    ok = yield VerifyPassword(rec.password_hash, current)
    if not ok:
        acc.lock_if_exhausted(rec.name, limit)
        acc.audit("login_fail", rec.name, service="jctotp", reason="wrong_password")
        yield Result(1, "That password is not right; nothing was changed.", delay=True)
        return
    # One attempt covers password and code, as in a login: resetting the
    # counter between them would give unlimited code guesses to anyone
    # who knows the password.
    if acc.state(rec) is MfaState.ACTIVE and not (
            yield from _prove(acc, rec, "to confirm", reserved=True)):
        return
    acc.store.reset_failures(rec.name)
    new = yield Prompt("New password: ")
    again = yield Prompt("New password again: ")
    if new != again:
        yield Result(2, "The two new passwords differ; nothing was changed.")
        return
    pw_hash = yield HashPassword(_new_password({"password": new}))
    acc.store.update(rec.name, password_hash=pw_hash)
    acc.audit("password_changed", rec.name, actor=rec.name)
    yield Result(0, "Password changed.")


ADMIN_VERBS: dict[str, Callable[[Accounts, str, dict[str, Any]], Conversation]] = {
    "user.add": user_add, "user.list": user_list, "user.show": user_show,
    "user.set": user_set, "user.remove": user_remove,
    "mfa.enable": mfa_enable, "mfa.reset": mfa_reset, "mfa.disable": mfa_disable,
    "unlock": unlock, "passwd.admin": admin_passwd, "audit": audit_read, "clock.set": clock_set,
}
SELF_VERBS: dict[str, Callable[[Accounts, UserRecord, dict[str, Any]], Conversation]] = {
    "status": self_status, "setup": self_setup, "reset": self_reset,
    "recovery-codes": self_recovery_codes, "passwd": self_passwd,
}


def handle(acc: Accounts, uid: int, request: dict[str, Any]) -> Conversation:
    """Check who asks and for what; returns the verb's conversation."""
    if request.get("v") != 1:
        raise UsageError("unsupported control protocol version; upgrade jctotp")
    verb = request.get("verb")
    args = request.get("args") or {}
    if not isinstance(verb, str) or not isinstance(args, dict):
        raise UsageError("malformed request")
    if verb in ADMIN_VERBS:
        if uid != 0:
            raise PermissionDenied(f"'{verb.replace('.', ' ')}' is an admin verb: run it as root")
        log.info("control: %s by root", verb)
        return ADMIN_VERBS[verb](acc, "root", args)
    if verb in SELF_VERBS:
        rec = _self(acc, uid)
        log.info("control: %s by %s", verb, rec.name)
        return SELF_VERBS[verb](acc, rec, args)
    raise UsageError(f"unknown verb {verb!r}")
