"""The User Portal's verbs (issue 23): jctotp-portal asks, jctotpd decides.

Only the portal's own uid (config `portal.user`) or root may call them
(core/verbs.py). Each request names the portal session (an opaque token the
daemon made at sign-in) and the browser's address (audit, rate limit); the
daemon keeps the session (portal_state.py), so these rules hold whatever the
web layer does:

- Sign-in is one attempt of core/lockout.py, like an SSH login: reserved
  before the password is checked, settled by the code (a guess on the portal
  counts against the same `max_attempts` as one over SSH); unknown names get
  the same answer, the same work and a virtual counter. A per-address limit
  (`portal.signins_per_minute`) comes first.
- Every change of a factor or of the password needs a code (or a recovery
  code) accepted within FRESH_CODE seconds, never the password alone.
- A reset to a new phone keeps the old key until the new one is confirmed.
- A forgotten-password link is single-use, expires after
  `password_reset_minutes`, and asks the code when MFA is active; asking for
  one gives the same answer whether or not the name or address exists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import JctotpError
from ..model import CodeOutcome, ExitCode, MfaState, Refusal, UserRecord
from ..secret import Secret
from . import lockout, mfa_lifecycle, notices, policy, provisioning, qr
from .accounts import Accounts
from .lockout import Attempt
from .login import MFA_FOR_ALL_TEXT
from .mfa_lifecycle import StaleKey
from .portal_state import Session
from .report import summary
from .steps import Conversation, Result, SetPassword, VerifyPassword
from .totp import Totp
from .verbargs import arg, new_password

log = logging.getLogger("jctotpd")

FRESH_CODE = 300.0   # seconds: "a code typed within the last 5 minutes"
LAST_LOGINS_DAYS = 30
SERVICE = "portal"

WRONG = "Wrong name or password."
WRONG_CODE = "That code is not right."
LOCKED_TEXT = "Your account is locked after too many failed attempts. Contact your administrator."
SIGNED_OUT = "Your session has ended; sign in again."
NEED_CODE = "Type a current code from your authenticator (or a recovery code) first."
TOO_FAST = "Too many requests from your address; wait a minute and try again."
RESET_SENT = ("If that name or address belongs to an account with an e-mail address, "
              "a reset link is on its way.")
BAD_LINK = "This reset link is not valid: it was used, replaced or has expired."
EXPIRED_TEXT = ("Your enrollment period has ended; ask your administrator to reset "
                "multi-factor authentication.")


class SignedOut(JctotpError):
    """No live portal session behind the token: the portal shows the sign-in page."""

    exit_code = ExitCode.PERMISSION


def _refused(text: str, **data: Any) -> Result:
    return Result(ExitCode.REFUSED, text, data=data or None)


def _address(args: dict[str, Any]) -> str:
    value: str = arg(args, "address", str, "")
    return value[:64]


def _audit(acc: Accounts, event: str, name: str | None, args: dict[str, Any],
           **fields: object) -> None:
    acc.audit(event, name, service=SERVICE, rhost=_address(args), **fields)


def _session(acc: Accounts, args: dict[str, Any]) -> Session:
    p = acc.config.portal
    token = arg(args, "session", str, "")
    s = acc.portal.get(token, acc.now(), p.session_idle_minutes * 60.0,
                       p.session_lifetime_minutes * 60.0) if token else None
    if s is None or not s.signed_in:
        raise SignedOut(SIGNED_OUT)
    return s


def _record(acc: Accounts, s: Session, args: dict[str, Any]) -> UserRecord:
    rec = acc.get(s.name)
    if rec is None:  # removed from the directory meanwhile
        acc.portal.close(args.get("session", ""))
        raise SignedOut(SIGNED_OUT)
    return rec


def _fresh(acc: Accounts, s: Session) -> bool:
    return s.code_at is not None and acc.now() - s.code_at <= FRESH_CODE


def _begin(acc: Accounts, rec: UserRecord) -> Attempt | None:
    """Reserve one attempt (core/lockout.py); None when locked."""
    return None if acc.is_locked(rec) else lockout.begin(acc, rec)


def _settle_code(acc: Accounts, rec: UserRecord, attempt: Attempt, answer: str,
                 args: dict[str, Any]) -> CodeOutcome | None:
    """One code (or recovery code) on a reserved attempt: a right one is used up and
    settles it (TOTP | RECOVERY), a wrong one counts (None)."""
    check = acc.check_code(rec, answer, consume=True,
                           reset_failures=True)
    if check.ok:
        lockout.succeeded(acc, attempt, counter_reset=check.reason is CodeOutcome.TOTP)
        if check.reason is CodeOutcome.RECOVERY:
            _audit(acc, "recovery_code_used", rec.name, args)
        return check.reason
    if check.reason is CodeOutcome.REPLAY:
        _audit(acc, "replay_refused", rec.name, args)
    lockout.failed(acc, attempt)
    _audit(acc, "login_fail", rec.name, args, reason=check.reason)
    return None


def _next_page(acc: Accounts, rec: UserRecord) -> str:
    state = acc.state(rec)
    return "enroll" if state in (MfaState.PENDING, MfaState.ENROLL_NOW) else "home"


# --- sign-in --------------------------------------------------------------------


def signin(acc: Accounts, args: dict[str, Any]) -> Conversation:
    name = arg(args, "name", str, "").strip()[:64]
    password = Secret(arg(args, "password", str, ""))
    address = _address(args)
    cfg = acc.config
    if not acc.portal.rate_ok(address, acc.now(), cfg.portal.signins_per_minute):
        yield _refused(TOO_FAST, rate_limited=True)
        return
    rec = provisioning.record(acc, name) if name else None
    if rec is None:
        # Same work and the same counter as a real name (core/login.py rule 2).
        unknown = lockout.begin(acc, acc.unknown.get(name), unknown=True)
        if unknown is None:
            yield Result(ExitCode.LOCKED, LOCKED_TEXT, delay=True)
            return
        yield VerifyPassword(None, password)
        lockout.failed(acc, unknown)
        _audit(acc, "login_fail", name or None, args, reason=Refusal.UNKNOWN_USER)
        yield Result(ExitCode.REFUSED, WRONG, delay=True)
        return
    attempt = _begin(acc, rec)
    if attempt is None:
        _audit(acc, "login_fail", rec.name, args, reason=Refusal.LOCKED)
        yield Result(ExitCode.LOCKED, LOCKED_TEXT, delay=True)
        return
    if not (yield VerifyPassword(rec.name, password)):
        lockout.failed(acc, attempt)
        _audit(acc, "login_fail", rec.name, args, reason=Refusal.WRONG_PASSWORD)
        yield Result(ExitCode.REFUSED, WRONG, delay=True)
        return
    state = acc.state(rec)
    now = acc.now()
    session = Session(rec.name, now, now, address)
    if state is MfaState.ACTIVE:
        session.attempt = attempt  # settled by portal.code
        token = acc.portal.open(session)
        yield Result(data={"session": token, "next": "code"})
        return
    lockout.succeeded(acc, attempt)
    if state is MfaState.EXPIRED:
        _audit(acc, "login_fail", rec.name, args, reason=Refusal.ENROLLMENT_EXPIRED)
        yield _refused(EXPIRED_TEXT)
        return
    if state is MfaState.OFF and cfg.require_mfa_for_all:  # as an SSH login is refused
        _audit(acc, "login_fail", rec.name, args, reason=Refusal.MFA_REQUIRED_FOR_ALL)
        yield _refused(MFA_FOR_ALL_TEXT)
        return
    token = acc.portal.open(session)
    _audit(acc, "login_ok", rec.name, args, how="password_only")
    yield Result(data={"session": token, "next": _next_page(acc, rec)})


def code(acc: Accounts, args: dict[str, Any]) -> Conversation:
    """The second factor of a sign-in: one code per password (a wrong one ends it)."""
    token = arg(args, "session", str, "")
    answer = arg(args, "code", str, "")
    p = acc.config.portal
    s = acc.portal.get(token, acc.now(), p.session_idle_minutes * 60.0,
                       p.session_lifetime_minutes * 60.0) if token else None
    attempt = acc.portal.take_attempt(token) if s is not None else None
    if s is None or attempt is None:
        raise SignedOut(SIGNED_OUT)
    rec = acc.get(s.name)
    if rec is None or rec.totp_secret is None:
        acc.portal.close(token)
        lockout.release(acc, attempt)
        raise SignedOut(SIGNED_OUT)
    how = _settle_code(acc, rec, attempt, answer, args)
    if how is not None:
        s.code_at = acc.now()
        _audit(acc, "login_ok", rec.name, args, how=how)
        yield Result(data={"next": "home"})
        return
    acc.portal.close(token)
    yield Result(ExitCode.REFUSED, WRONG_CODE + " Sign in again.", delay=True)


def signout(acc: Accounts, args: dict[str, Any]) -> Conversation:
    s = acc.portal.close(arg(args, "session", str, ""))
    if s is not None:
        _audit(acc, "portal_signout", s.name, args)
    yield Result(message="Signed out.")


# --- pages ------------------------------------------------------------------------


def status(acc: Accounts, args: dict[str, Any]) -> Conversation:
    s = _session(acc, args)
    rec = _record(acc, s, args)
    data = summary(acc, rec)
    # The last 30 days (the fleet's audit table is asked for no more; a local log is
    # kept short by logrotate).
    logins = [e for e in acc.audit_log.events(user=rec.name, since=acc.now() - LAST_LOGINS_DAYS
                                              * policy.DAY)
              if e.get("event") in ("login_ok", "login_fail")]
    data["last_logins"] = [{k: e.get(k) for k in ("time", "event", "service", "rhost", "host")}
                           for e in logins[-5:][::-1]]
    data["fresh_code"] = _fresh(acc, s)
    data["resetting"] = s.new_secret is not None
    yield Result(data=data)


def prove(acc: Accounts, args: dict[str, Any]) -> Conversation:
    """A current code (or a recovery code) typed now: makes the session fresh."""
    s = _session(acc, args)
    rec = _record(acc, s, args)
    if acc.state(rec) is not MfaState.ACTIVE:
        yield _refused("You have no authenticator yet: enroll first.")
        return
    attempt = _begin(acc, rec)
    if attempt is None:
        yield Result(ExitCode.LOCKED, LOCKED_TEXT, delay=True)
        return
    if _settle_code(acc, rec, attempt, arg(args, "code", str, ""), args) is None:
        yield Result(ExitCode.REFUSED, WRONG_CODE, delay=True)
        return
    s.code_at = acc.now()
    yield Result(data={"fresh_code": True})


def _key_data(acc: Accounts, name: str, secret: Secret) -> dict[str, Any]:
    return {"key": qr.grouped_key(secret), "otpauth_uri": acc.otpauth_uri(name, secret)}


def enroll(acc: Accounts, args: dict[str, Any]) -> Conversation:
    """The key to scan: the pending one (enrollment), or a new one (a reset to a new
    phone, which needs a fresh code; the old key works until confirm)."""
    s = _session(acc, args)
    rec = _record(acc, s, args)
    state = acc.state(rec)
    if state in (MfaState.PENDING, MfaState.ENROLL_NOW):
        secret, _ = acc.pending_key(rec)
        yield Result(data={**_key_data(acc, rec.name, secret), "reset": False})
        return
    if state is not MfaState.ACTIVE:
        yield _refused("Multi-factor authentication is not required for your account."
                       if state is MfaState.OFF else EXPIRED_TEXT)
        return
    if not _fresh(acc, s):
        yield _refused(NEED_CODE, need_code=True)
        return
    if s.new_secret is None:
        s.new_secret = Totp.new_secret()
    yield Result(data={**_key_data(acc, rec.name, s.new_secret), "reset": True})


def confirm(acc: Accounts, args: dict[str, Any]) -> Conversation:
    """A code of the key `enroll` showed: activates it, with new recovery codes."""
    s = _session(acc, args)
    rec = _record(acc, s, args)
    state = acc.state(rec)
    answer = arg(args, "code", str, "").strip()
    pending: bytes | None = None
    if state in (MfaState.PENDING, MfaState.ENROLL_NOW):
        secret, pending = acc.pending_key(rec)
        event = "enrolled"
    elif state is MfaState.ACTIVE and s.new_secret is not None:
        if not _fresh(acc, s):
            yield _refused(NEED_CODE, need_code=True)
            return
        secret, event = s.new_secret, "mfa_reset"
    else:
        yield _refused("There is no new key to confirm; start again.")
        return
    step = acc.totp.match(secret, answer, acc.now()) if answer else None
    if step is None:
        yield _refused(WRONG_CODE + " Check the time on your phone and try the current code.")
        return
    try:
        codes = mfa_lifecycle.activate(acc, rec.name, secret, step, pending=pending)
    except StaleKey:
        yield _refused("This key was withdrawn meanwhile (a password reset); start again.")
        return
    s.new_secret = None
    s.code_at = acc.now()
    _audit(acc, event, rec.name, args, actor=rec.name)
    yield Result(message="Multi-factor authentication is active with the new key.",
                 data={"recovery_codes": codes})


def recovery_codes(acc: Accounts, args: dict[str, Any]) -> Conversation:
    s = _session(acc, args)
    rec = _record(acc, s, args)
    if acc.state(rec) is not MfaState.ACTIVE:
        yield _refused("Recovery codes need an active authenticator: enroll first.")
        return
    if not _fresh(acc, s):
        yield _refused(NEED_CODE, need_code=True)
        return
    codes = acc.recovery_codes()
    if not codes:
        yield _refused("Recovery codes are turned off here.")
        return
    acc.replace_recovery_codes(rec.name, codes)
    _audit(acc, "recovery_codes_regenerated", rec.name, args, actor=rec.name)
    yield Result(message="New recovery codes made; the old ones no longer work.",
                 data={"recovery_codes": codes})


def passwd(acc: Accounts, args: dict[str, Any]) -> Conversation:
    """Current password + (with MFA active) a fresh code, then the new password."""
    s = _session(acc, args)
    rec = _record(acc, s, args)
    new = new_password({"password": args.get("new_password")})
    current = Secret(arg(args, "password", str, ""))
    if acc.state(rec) is MfaState.ACTIVE and not _fresh(acc, s):
        yield _refused(NEED_CODE, need_code=True)
        return
    attempt = _begin(acc, rec)
    if attempt is None:
        yield Result(ExitCode.LOCKED, LOCKED_TEXT, delay=True)
        return
    if not (yield VerifyPassword(rec.name, current)):
        lockout.failed(acc, attempt)
        _audit(acc, "login_fail", rec.name, args, reason=Refusal.WRONG_PASSWORD)
        yield Result(ExitCode.REFUSED, "That password is not right; nothing was changed.",
                     delay=True)
        return
    lockout.succeeded(acc, attempt)
    yield SetPassword(rec.name, new, old=current)
    acc.password_changed(rec.name, rec.name)
    acc.portal.close_user(rec.name, keep=args.get("session"))
    yield Result(message="Password changed.")


# --- forgotten password --------------------------------------------------------------


def forgot(acc: Accounts, args: dict[str, Any]) -> Conversation:
    """Mail a reset link to the account's address; the same answer in every case."""
    who = arg(args, "login", str, "").strip()[:256]
    address = _address(args)
    if not acc.portal.rate_ok(address, acc.now(), acc.config.portal.signins_per_minute):
        yield _refused(TOO_FAST, rate_limited=True)
        return
    rec = _find(acc, who)
    if rec is not None and rec.email:
        expires = acc.now() + acc.config.password_reset_minutes * 60
        token = acc.portal.new_reset(rec.name, expires)
        notices.send(acc, rec.name, "password_reset",
                     link=f"{acc.config.portal.public_url}/reset/{token}",
                     minutes=acc.config.password_reset_minutes)
        _audit(acc, "password_reset_requested", rec.name, args)
    yield Result(message=RESET_SENT)


def _find(acc: Accounts, who: str) -> UserRecord | None:
    if not who:
        return None
    if "@" not in who:
        return provisioning.record(acc, who)
    wanted = who.lower()
    for rec in acc.store.list():
        if rec.email and rec.email.lower() == wanted:
            return rec
    return None


def reset_check(acc: Accounts, args: dict[str, Any]) -> Conversation:
    """What the reset page must ask: nothing is used up."""
    link = acc.portal.peek_reset(arg(args, "token", str, ""), acc.now())
    rec = acc.get(link.name) if link is not None else None
    if rec is None:
        yield _refused(BAD_LINK)
        return
    yield Result(data={"needs_code": acc.state(rec) is MfaState.ACTIVE})


def reset(acc: Accounts, args: dict[str, Any]) -> Conversation:
    """Redeem a reset link: the code first (MFA active), then the new password.
    A wrong code counts as an attempt and leaves the link usable until it expires."""
    token = arg(args, "token", str, "")
    new = new_password({"password": args.get("new_password")})
    link = acc.portal.peek_reset(token, acc.now())
    rec = acc.get(link.name) if link is not None else None
    if rec is None:
        yield _refused(BAD_LINK)
        return
    if acc.is_locked(rec):
        yield Result(ExitCode.LOCKED, LOCKED_TEXT, delay=True)
        return
    if acc.state(rec) is MfaState.ACTIVE:
        attempt = _begin(acc, rec)
        if attempt is None:
            yield Result(ExitCode.LOCKED, LOCKED_TEXT, delay=True)
            return
        if _settle_code(acc, rec, attempt, arg(args, "code", str, ""), args) is None:
            yield Result(ExitCode.REFUSED, WRONG_CODE, delay=True)
            return
    if acc.portal.redeem_reset(token, acc.now()) is None:
        yield _refused(BAD_LINK)
        return
    yield SetPassword(rec.name, new)
    acc.password_changed(rec.name, rec.name)
    acc.portal.close_user(rec.name)  # whoever was signed in with the old password
    _audit(acc, "password_reset", rec.name, args)
    yield Result(message="Password changed; sign in with the new one.")


PORTAL_VERBS: dict[str, Callable[[Accounts, dict[str, Any]], Conversation]] = {
    "portal.signin": signin, "portal.code": code, "portal.signout": signout,
    "portal.status": status, "portal.prove": prove, "portal.enroll": enroll,
    "portal.confirm": confirm, "portal.recovery-codes": recovery_codes,
    "portal.passwd": passwd, "portal.forgot": forgot, "portal.reset-check": reset_check,
    "portal.reset": reset,
}
