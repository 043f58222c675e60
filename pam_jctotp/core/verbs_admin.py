"""Admin verbs of the control socket (root only; core/verbs.py checks who asks).

Bulk verbs check every name first and change nothing if one is bad. Each verb
is a conversation (steps.py), run by the transport one step at a time in a
worker thread, so `useradd` or a slow audit scan never holds up a login.
"""

from __future__ import annotations

from typing import Any

from ..errors import PermissionDenied, UsageError
from ..model import MfaState
from . import lockout, policy
from .accounts import Accounts
from .report import summary
from .steps import Conversation, Info, Result, SetPassword
from .totp import Totp
from .verbargs import arg, days, new_password, user, users


def user_add(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    name = policy.check_name(arg(args, "name", str))
    is_admin = arg(args, "admin", bool, False)
    mfa = arg(args, "mfa", bool, False)
    password = new_password(args) if args.get("password") is not None else None
    if acc.store.get(name) is not None:
        raise UsageError(f"user {name!r} already exists")
    created = False
    if arg(args, "system_account", bool, acc.config.create_system_accounts):
        created = acc.system.create_account(name)
    secret = Totp.new_secret() if mfa else None
    with acc.store.unit_of_work():
        acc.store.add(name, is_admin=is_admin, password_hash=None, now=acc.now())
        codes = acc.activate(name, secret, None) if secret else []
        if secret:
            acc.store.update(name, mfa_required=1)
    if password is not None:
        yield SetPassword(name, password)
    acc.audit("user_added", name, actor=actor, admin=is_admin or None)
    data: dict[str, Any] = {"name": name, "admin": is_admin, "system_account_created": created}
    message = f"Added user {name}" + (" (admin)" if is_admin else "") + "."
    if secret:
        acc.audit("mfa_enabled", name, actor=actor, reason="enrolled by admin")
        data.update(otpauth_uri=acc.otpauth_uri(name, secret), recovery_codes=codes)
        yield Info(acc.enrollment_text(name, secret) + acc.recovery_text(codes)
                   + "Hand these to the user over a safe channel; they are not shown again.")
    yield Result(message=message, data=data)


def user_list(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    yield Result(data=[summary(acc, r) for r in acc.store.list()])


def user_show(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    yield Result(data=summary(acc, user(acc, args.get("name"))))


def user_set(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    rec = user(acc, args.get("name"))
    changes: dict[str, Any] = {}
    if "max_attempts" in args:
        value = args["max_attempts"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 1 <= value <= 100):
            raise UsageError("--max-attempts must be between 1 and 100 (or 'default')")
        changes["max_attempts"] = value
    if "admin" in args:
        changes["is_admin"] = int(arg(args, "admin", bool))
    if not changes:
        raise UsageError("nothing to change (try --max-attempts N or --admin/--no-admin)")
    acc.store.update(rec.name, **changes)
    acc.audit("user_changed", rec.name, actor=actor,
              reason=", ".join(f"{k}={v}" for k, v in changes.items()))
    yield Result(message=f"Updated {rec.name}.", data=summary(acc, acc.get(rec.name) or rec))


def user_remove(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    rec = user(acc, args.get("name"))
    acc.store.delete(rec.name)
    acc.audit("user_removed", rec.name, actor=actor)
    yield Result(message=f"Removed {rec.name} from the directory (the Linux account is kept).")


def mfa_enable(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    period = days(args, acc.config.default_enrollment_days)
    records = users(acc, args)
    done = []
    for rec in records:
        if acc.state(rec) is MfaState.ACTIVE:
            acc.store.update(rec.name, mfa_required=1)
        else:
            acc.store.update(rec.name, mfa_required=1,
                             enroll_deadline=acc.now() + period * policy.DAY)
        acc.audit("mfa_enabled", rec.name, actor=actor, enrollment_days=period)
        done.append(summary(acc, acc.get(rec.name) or rec))
    yield Result(message=f"MFA required for {', '.join(r.name for r in records)}; "
                 f"{period} day(s) to enroll.", data=done)


def mfa_reset(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    period = days(args, acc.config.default_enrollment_days)
    records = users(acc, args)
    for rec in records:
        acc.start_enrollment(rec.name, period)
        acc.audit("mfa_reset", rec.name, actor=actor, enrollment_days=period)
    yield Result(message=f"MFA reset for {', '.join(r.name for r in records)}; they enroll at "
                 f"their next login within {period} day(s).",
                 data=[summary(acc, acc.get(r.name) or r) for r in records])


def mfa_disable(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    records = users(acc, args)
    for rec in records:
        with acc.store.unit_of_work():
            acc.store.update(rec.name, mfa_required=0, totp_secret=None, pending_secret=None,
                             enroll_deadline=None, enrolled_at=None)
            acc.store.clear_recovery_codes(rec.name)
        acc.audit("mfa_disabled", rec.name, actor=actor)
    yield Result(message=f"MFA disabled for {', '.join(r.name for r in records)}.")


def unlock(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    records = users(acc, args)
    for rec in records:
        lockout.unlock(acc, rec.name)
        acc.audit("unlocked", rec.name, actor=actor)
    yield Result(message=f"Unlocked {', '.join(r.name for r in records)} "
                 "(password and authenticator unchanged).")


def admin_passwd(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    rec = user(acc, args.get("name"))
    yield SetPassword(rec.name, new_password(args))
    acc.password_changed(rec.name, actor)
    message = f"Password of {rec.name} set."
    if acc.is_admin(rec) and rec.name != actor:
        # As JumpCloud does: another admin resetting an admin's password also
        # resets their TOTP key, so a stolen admin session cannot keep both.
        acc.start_enrollment(rec.name, acc.config.default_enrollment_days)
        acc.audit("mfa_reset", rec.name, actor=actor, reason="admin password reset")
        message += (f" {rec.name} is an admin: their TOTP key was reset too; they enroll "
                    f"again at next login within {acc.config.default_enrollment_days} day(s).")
    yield Result(message=message, data=summary(acc, acc.get(rec.name) or rec))


def audit_read(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    name = arg(args, "user", str, None)
    since = args.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))):
        raise UsageError("since must be a timestamp")
    events = list(acc.audit_log.events(name, since, arg(args, "host", str, None)))
    yield Result(data=events[-int(arg(args, "limit", int, 10000)):])


def doctor(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    """What only the daemon can check, for `jctotp doctor`: its directory."""
    yield Result(data={"directory": acc.directory.check(), "store": acc.store.health()})


def clock_set(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    offset = args.get("offset")
    if isinstance(offset, bool) or not isinstance(offset, (int, float)):
        raise UsageError("offset must be a number of seconds")
    if not acc.clock.controllable:
        raise PermissionDenied("clock control is off (it is for the test suite only)")
    acc.clock.set_offset(offset)
    yield Result(message=f"clock offset {offset}s")
