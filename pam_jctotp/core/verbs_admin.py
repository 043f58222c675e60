"""Admin verbs of the control socket (root only; core/verbs.py checks who asks).

Bulk verbs check every name first and change nothing if one is bad. Each verb
is a conversation (steps.py), run by the transport one step at a time in a
worker thread, so `useradd` or a slow audit scan never holds up a login.

Every changing verb is safe to re-run (configuration management): its result
carries `changed`, and a run that changes nothing audits nothing and says so.
Admins get no enrollment period (JumpCloud: resetting an admin's password
resets their TOTP key too): their next login must enroll. What each change
writes is core/mfa_lifecycle.py's.
"""

from __future__ import annotations

from typing import Any

from ..errors import PermissionDenied, StoreUnavailable, UsageError
from ..model import ExitCode, MfaState, UserRecord
from . import lockout, mfa_lifecycle, notices, policy, provisioning
from .accounts import Accounts
from .report import ReportGroups, summary
from .steps import Conversation, Error, Info, Result, SetPassword, VerifyPassword
from .totp import Totp
from .verbargs import arg, new_password, period, user, users


def _shown(acc: Accounts, name: str, changed: bool) -> dict[str, Any]:
    rec = acc.get(name)
    return {**(summary(acc, rec) if rec is not None else {"name": name}), "changed": changed}


def _bulk(acc: Accounts, outcomes: list[tuple[UserRecord, bool, str]]) -> Result:
    """One line per user (what was done, or that nothing was) and every user's state."""
    shown = [_shown(acc, rec.name, changed) for rec, changed, _ in outcomes]
    return Result(message="\n".join(f"{rec.name}: {line}" for rec, _, line in outcomes),
                  data={"changed": any(c for _, c, _ in outcomes), "users": shown})


def _period_text(days: int | None) -> str:
    return ("must enroll at the next login (no enrollment period)" if days is None
            else f"{days} day(s) to enroll")


def user_add(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    name = policy.check_name(arg(args, "name", str))
    is_admin = arg(args, "admin", bool, False)
    mfa = arg(args, "mfa", bool, False)
    password = new_password(args) if args.get("password") is not None else None
    if password is not None and not acc.directory.editable:
        raise UsageError("the directory keeps its users' passwords: add the user without "
                         "one (--no-password), or let them appear at their first login")
    existing = acc.store.get(name)
    if existing is not None:
        if not arg(args, "exist_ok", bool, False):
            raise UsageError(f"user {name!r} already exists (--exist-ok: no change when "
                             "nothing differs)")
        yield from _user_exists(acc, existing, is_admin, mfa, password)
        return
    if acc.directory.provisions and not acc.directory.exists(name):
        # Else every host would get a record (and a Linux account) nobody can log in to.
        raise UsageError(f"user {name!r} is not in the directory ({acc.directory.describe()}); "
                         "add them there first, nothing was changed")
    created = False
    if arg(args, "system_account", bool, acc.config.makes_accounts):
        created = acc.system.create_account(name, acc.directory.identity(name))
    secret = Totp.new_secret() if mfa else None
    with acc.store.unit_of_work():
        acc.store.add(name, is_admin=is_admin, password_hash=None, now=acc.now())
        codes = mfa_lifecycle.activate(acc, name, secret, None) if secret else []
        if secret:
            mfa_lifecycle.require_flag(acc, name)
    if password is not None:
        yield SetPassword(name, password)
    acc.audit("user_added", name, actor=actor, admin=is_admin or None)
    rec = acc.store.get(name)
    if rec is not None and not secret:
        rec = provisioning.apply_groups(acc, rec, actor=actor)   # mfa_groups, admin_groups
    data: dict[str, Any] = {"name": name, "admin": is_admin, "system_account_created": created,
                            "changed": True}
    message = f"Added user {name}" + (" (admin)" if is_admin else "") + "."
    if rec is not None and not secret and acc.state(rec) is not MfaState.OFF:
        data["mfa"] = acc.state(rec).value
        message += (" Group policy requires MFA: enrollment at the next login"
                    + (f" (within {acc.days_left(rec)} day(s))."
                       if acc.state(rec) is MfaState.PENDING else ", no period."))
    if secret:
        acc.audit("mfa_enabled", name, actor=actor, reason="enrolled by admin")
        data.update(otpauth_uri=acc.otpauth_uri(name, secret), recovery_codes=codes)
        yield Info(acc.enrollment_text(name, secret) + acc.recovery_text(codes)
                   + "Hand these to the user over a safe channel; they are not shown again.")
    yield Result(message=message, data=data)


def _user_exists(acc: Accounts, rec: UserRecord, is_admin: bool, mfa: bool,
                 password: Any) -> Conversation:
    """`user add --exist-ok` of a user that exists: a no-op when it is the same user."""
    differs = []
    if rec.is_admin != is_admin:
        differs.append("admin flag")
    if mfa and acc.state(rec) is MfaState.OFF:
        differs.append("MFA")
    if password is not None and not (yield VerifyPassword(rec.name, password)):
        differs.append("password")
    if differs:
        yield Result(ExitCode.REFUSED, f"user {rec.name!r} exists with another "
                     f"{' and '.join(differs)}; nothing was changed (see `jctotp user set`, "
                     "`jctotp passwd`, `jctotp mfa enable`)")
        return
    yield Result(message=f"User {rec.name} already exists; nothing changed.",
                 data=_shown(acc, rec.name, False))


def user_list(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    groups = ReportGroups(acc)   # the list is the store's: a directory outage only warns
    shown = [summary(acc, r, groups) for r in acc.store.list()]
    if (warning := groups.warning()) is not None:
        yield warning
    yield Result(data=shown)


def user_show(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    groups = ReportGroups(acc)
    shown = summary(acc, user(acc, args.get("name")), groups)
    if (warning := groups.warning()) is not None:
        yield warning
    yield Result(data=shown)


def user_set(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    rec = user(acc, args.get("name"))
    wanted: dict[str, Any] = {}
    if "max_attempts" in args:
        value = args["max_attempts"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 1 <= value <= 100):
            raise UsageError("--max-attempts must be between 1 and 100 (or 'default')")
        wanted["max_attempts"] = value
    if "admin" in args:
        wanted["is_admin"] = arg(args, "admin", bool)
    if "email" in args:
        email = args["email"]
        wanted["email"] = None if email in (None, "") else policy.check_email(email)
    if not wanted:
        raise UsageError("nothing to change (try --max-attempts N, --admin/--no-admin, "
                         "--email ADDR)")
    changes = {k: v for k, v in wanted.items() if getattr(rec, k) != v}
    if not changes:
        yield Result(message=f"{rec.name} already has these settings; nothing changed.",
                     data=_shown(acc, rec.name, False))
        return
    acc.store.update(rec.name, **changes)
    acc.audit("user_changed", rec.name, actor=actor,
              reason=", ".join(f"{k}={v}" for k, v in changes.items()))
    yield Result(message=f"Updated {rec.name}.", data=_shown(acc, rec.name, True))


def user_remove(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    rec = user(acc, args.get("name"))
    acc.store.delete(rec.name)
    acc.markers.mark(rec.name, False)  # markers follow the store (issue 9 item 12)
    acc.audit("user_removed", rec.name, actor=actor)
    yield Result(message=f"Removed {rec.name} from the directory (the Linux account is kept).",
                 data={"name": rec.name, "changed": True})


def mfa_enable(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    """Require MFA. A pending user keeps their deadline unless --enrollment-days
    or --enroll-now says otherwise; an enrolled user keeps their key."""
    days, explicit = period(args, acc.config.default_enrollment_days)
    records = users(acc, args)
    periods = mfa_lifecycle.periods(acc, records, days, explicit)
    outcomes = []
    for rec in records:
        state, want = acc.state(rec), periods[rec.name]
        if state is MfaState.ACTIVE:
            changed = not rec.mfa_required and mfa_lifecycle.require_flag(acc, rec.name)
            line = "enrolled already" + ("; MFA now required" if changed else "")
        elif (state is MfaState.PENDING and want is not None and not explicit) or \
                (state is MfaState.ENROLL_NOW and want is None):
            changed = False
            line = ("already pending, " + _period_text(acc.days_left(rec) or None)
                    + "; nothing changed")
        else:
            changed = mfa_lifecycle.require(acc, rec.name, want)
            line = "MFA required; " + _period_text(want)
        if changed:
            acc.audit("mfa_enabled", rec.name, actor=actor, enrollment_days=want,
                      enroll_now=want is None or None)
        outcomes.append((rec, changed, line))
    yield _bulk(acc, outcomes)


def mfa_reset(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    """New key for each user: secrets and recovery codes removed, a new period
    (none for admins, none with --compromised), and any lock lifted."""
    compromised = arg(args, "compromised", bool, False)
    if compromised and args.get("enrollment_days") is not None:
        raise UsageError("--compromised means no enrollment period: the next login must "
                         "enroll; leave out --enrollment-days")
    days, explicit = (None, True) if compromised else period(
        args, acc.config.default_enrollment_days)
    records = users(acc, args)
    periods = mfa_lifecycle.periods(acc, records, days, explicit)
    outcomes = []
    for rec in records:
        want = periods[rec.name]
        mfa_lifecycle.reset(acc, rec.name, want)
        acc.audit("mfa_reset", rec.name, actor=actor, enrollment_days=want,
                  enroll_now=want is None or None, compromised=compromised or None,
                  reason="compromised" if compromised else None)
        line = "MFA reset; " + _period_text(want)
        if acc.is_locked(rec):  # the lost-phone case: they locked themselves out guessing
            lockout.unlock(acc, rec.name, actor, reason="mfa reset")
            line += "; the lock was lifted"
        outcomes.append((rec, True, line))
    yield _bulk(acc, outcomes)


def mfa_disable(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    records = users(acc, args)
    outcomes = []
    for rec in records:
        if acc.state(rec) is MfaState.OFF and rec.pending_secret is None:
            outcomes.append((rec, False, "MFA was off already; nothing changed"))
            continue
        mfa_lifecycle.disable(acc, rec.name)
        acc.audit("mfa_disabled", rec.name, actor=actor)
        outcomes.append((rec, True, "MFA disabled"))
    yield _bulk(acc, outcomes)


def unlock(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    """Lift a lock (password and authenticator kept). An enrollment that expired is
    a lock too: it gets a new period (--enrollment-days N, the default, or
    --enroll-now). A user who is not locked is left alone and nothing is audited."""
    days, explicit = period(args, acc.config.default_enrollment_days)
    records = users(acc, args)
    expired = [r for r in records if acc.state(r) is MfaState.EXPIRED]
    periods = mfa_lifecycle.periods(acc, expired, days, explicit)
    outcomes = []
    for rec in records:
        done = []
        if acc.is_locked(rec):
            lockout.unlock(acc, rec.name, actor)
            done.append("unlocked (password and authenticator unchanged)")
        if rec.name in periods:
            want = periods[rec.name]
            mfa_lifecycle.renew(acc, rec.name, want)
            acc.audit("unlocked", rec.name, actor=actor, reason=policy.ENROLLMENT_EXPIRED,
                      enrollment_days=want, enroll_now=want is None or None)
            done.append("enrollment period renewed: " + _period_text(want))
        outcomes.append((rec, bool(done), "; ".join(done) or "not locked; nothing changed"))
    yield _bulk(acc, outcomes)


def admin_passwd(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    rec = user(acc, args.get("name"))
    yield SetPassword(rec.name, new_password(args))
    acc.password_changed(rec.name, actor)
    message = f"Password of {rec.name} set."
    if acc.is_admin(rec) and rec.name != actor:
        # As JumpCloud does: another admin resetting an admin's password also
        # resets their TOTP key, with no grace: a stolen password alone never logs in.
        mfa_lifecycle.reset(acc, rec.name, None)
        acc.audit("mfa_reset", rec.name, actor=actor, reason="admin password reset",
                  enroll_now=True)
        message += (f" {rec.name} is an admin: their TOTP key was reset too; they must "
                    "enroll at their next login (no enrollment period).")
    yield Result(message=message, data=_shown(acc, rec.name, True))


def audit_read(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    if arg(args, "verify", bool, False):
        yield from _audit_verify(acc)
        return
    host = arg(args, "host", str, None)
    name = arg(args, "user", str, None)
    since = args.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))):
        raise UsageError("since must be a timestamp")
    log = acc.audit_log
    try:
        events = _audit_events(log, name, since, host)
    except StoreUnavailable:
        # a fleet database outage: this host's own file, said on stderr (issue 22)
        local = getattr(log, "local", None)
        if local is None:
            raise
        yield Error(f"the fleet database is unavailable: these are only this host's "
                    f"({local.host}) own audit events, from {local.path}; events of the "
                    "outage are spooled and reach the fleet's audit when it returns")
        events = _audit_events(local, name, since, host)
    yield Result(data=events[-int(arg(args, "limit", int, 10000)):])


def _audit_events(log: Any, name: str | None, since: float | None,
                  host: str | None) -> list[dict[str, Any]]:
    if host is not None:
        known = log.hosts()
        if host not in known:
            raise UsageError(f"unknown host {host!r}: no audit event of the fleet comes "
                             f"from it (hosts: {', '.join(known) or 'none'})")
    return list(log.events(name, since, host))


def _audit_verify(acc: Accounts) -> Conversation:
    """`jctotp audit --verify`: the database recomputes every host's hash chain."""
    found = acc.audit_log.verify()
    problems = found["problems"]
    if problems:
        yield Result(ExitCode.REFUSED, "\n".join(
            [f"audit chains BROKEN ({len(problems)} problem(s), {found['hosts']} host(s), "
             f"{found['rows']} row(s)):"] + [f"  {p}" for p in problems]), data=found)
        return
    yield Result(message=f"audit chains intact: {found['hosts']} host(s), {found['rows']} "
                 "row(s), no row edited or deleted", data=found)


def user_resend_email(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    """The MFA-enabled mail again (issue 23), for a user inside their enrollment period."""
    rec = user(acc, args.get("name"))
    if not acc.outbox.enabled:
        yield Result(ExitCode.REFUSED, "no mail is sent: configure smtp: in the config")
        return
    if not rec.email:
        yield Result(ExitCode.REFUSED, f"{rec.name} has no e-mail address "
                     f"(jctotp user set {rec.name} --email ADDR)")
        return
    if not notices.enrollment_mail(acc, rec.name):
        yield Result(ExitCode.REFUSED, f"{rec.name} is not in an enrollment period: "
                     "nothing to enroll for (mfa enable / mfa reset start one)")
        return
    yield Result(message=f"Enrollment mail queued to {rec.email}.")


def doctor(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    """What only the daemon can check, for `jctotp doctor`: its directory."""
    name = arg(args, "user", str, None)
    yield Result(data={"directory": acc.directory.check(name),
                       "directory_kind": acc.directory.describe(),
                       "store": acc.store.health() + acc.clock_findings(),
                       "accounts": acc.account_findings() + _break_glass(acc)})


def _break_glass(acc: Accounts) -> list[tuple[str, str]]:
    """The break-glass members this host would refuse in a directory outage."""
    findings = getattr(acc.directory, "break_glass_findings", None)
    return findings() if findings is not None else []


def clock_set(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    """Tests only: `offset` moves time; `skew` (optional) makes this host's clock wrong
    (clock.py)."""
    values = [args.get("offset"), args.get("skew", acc.clock.skew)]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError("offset and skew must be numbers of seconds")
    if not acc.clock.controllable:
        raise PermissionDenied("clock control is off (it is for the test suite only)")
    offset, skew = (float(v) for v in values)
    acc.clock.set_offset(offset)
    acc.clock.set_skew(skew)
    yield Result(message=f"clock offset {offset}s, skew {skew}s")
