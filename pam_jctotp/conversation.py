"""The PAM login conversation: a sans-I/O state machine (see steps.py).

Rules, in one place:
1. Password first (or the earlier module's PAM_AUTHTOK with use_first_pass),
   then the code. With factors=totp there is no password: the first factor
   was checked by an earlier module or by sshd (publickey).
2. Unknown users get the prompts of an enrolled user and fail at the end;
   every failure is held back to the same `fail_delay` by the server, and a
   dummy argon2 verify keeps the work equal.
3. Every login of a known user reserves one attempt BEFORE any factor is
   checked (one atomic UPDATE); a locked account or a used-up window gets no
   check at all. Success resets the counter. So N parallel guesses are
   counted N times and never exceed the limit.
4. A locked account is refused in auth (after the prompts, whatever was
   typed) and in account (so publickey logins are refused too).
5. A code is accepted once: its time-step must be newer than the last.
6. Inside the enrollment period a right password shows the QR code and asks
   for a code; empty skips; after the deadline the login is refused.
7. Exempt users (group or source) skip the code, never the password; with
   factors=totp they get IGNORE, never SUCCESS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import policy
from .accounts import Accounts
from .policy import MfaState
from .secret import Secret
from .steps import (ACCT_EXPIRED, AUTH_ERR, IGNORE, MAXTRIES, PERM_DENIED, SUCCESS,
                    USER_UNKNOWN, Conversation, Error, Info, Prompt, Verdict, VerifyPassword)
from .store import UserRecord

log = logging.getLogger("jctotpd")

PASSWORD_PROMPT = "Password: "
CODE_PROMPT = "Verification code: "
ENROLL_PROMPT = "Enter the 6-digit code from your app to finish (Enter to skip): "
ACK_PROMPT = "Press Enter when you have stored them: "
LOCKED_TEXT = ("Your account is locked after too many failed attempts. "
               "Contact your administrator{until}.")
EXPIRED_TEXT = ("Your multi-factor authentication enrollment period has ended. "
                "Contact your administrator to reset it.")


@dataclass(frozen=True)
class LoginRequest:
    call: str            # "auth" | "acct"
    service: str
    user: str
    rhost: str = ""
    tty: str = ""
    factors: str = "password,totp"
    authtok: Secret | None = None

    @property
    def password_factor(self) -> bool:
        return self.factors == "password,totp"


class Login:
    def __init__(self, accounts: Accounts, req: LoginRequest) -> None:
        self.acc = accounts
        self.req = req

    def _audit(self, event: str, **fields: object) -> bool:
        return self.acc.audit(event, self.req.user, service=self.req.service,
                              rhost=self.req.rhost, tty=self.req.tty, **fields)

    def _fail(self, reason: str, code: str = AUTH_ERR) -> Conversation:
        self._audit("login_fail", reason=reason)
        yield Verdict(code, delay=True)

    def _locked_text(self, rec: UserRecord) -> str:
        until = policy.locked_until(rec, self.acc.config)
        if until is None:
            return LOCKED_TEXT.format(until="")
        minutes = max(1, round((until - self.acc.now()) / 60))
        return LOCKED_TEXT.format(until=f" or try again in {minutes} min")

    def run(self) -> Conversation:
        if self.req.call == "acct":
            return self.account()
        return self.authenticate()

    # --- pam_sm_acct_mgmt --------------------------------------------------

    def account(self) -> Conversation:
        rec = self.acc.get(self.req.user)
        if rec is None:
            yield Verdict(IGNORE if self.acc.config.unknown_users == "ignore" else USER_UNKNOWN)
            return
        if rec.locked_at is not None:
            self._audit("acct_refused", reason="locked")
            yield Error(self._locked_text(rec))
            yield Verdict(PERM_DENIED)
            return
        state = self.acc.state(rec)
        if state is MfaState.EXPIRED:
            self._audit("acct_refused", reason="enrollment_expired")
            yield Error(EXPIRED_TEXT)
            yield Verdict(ACCT_EXPIRED)
            return
        if state is MfaState.OFF and self.acc.config.require_mfa_for_all:
            self._audit("acct_refused", reason="mfa_required_for_all")
            yield Error("Multi-factor authentication is required but not set up for your "
                        "account. Contact your administrator.")
            yield Verdict(PERM_DENIED)
            return
        yield Verdict(SUCCESS)

    # --- pam_sm_authenticate ----------------------------------------------

    def authenticate(self) -> Conversation:
        req, acc = self.req, self.acc
        rec = acc.get(req.user)
        if rec is None and not req.password_factor and acc.config.unknown_users == "ignore":
            yield Verdict(IGNORE)
            return
        if rec is not None and rec.locked_at is not None:
            yield from self._locked(rec)
            return
        state = acc.state(rec) if rec is not None else MfaState.ACTIVE
        password = None
        if req.password_factor:
            password = req.authtok
            if password is None:
                password = Secret((yield Prompt(PASSWORD_PROMPT)))
        code = None
        if state is MfaState.ACTIVE:
            code = yield Prompt(CODE_PROMPT)  # asked before any check: reveals nothing

        if rec is None:
            if password is not None:
                yield VerifyPassword(None, password)  # same work as a real check
            yield from self._fail("unknown_user")
            return
        limit = acc.limit(rec)
        if acc.store.reserve_attempt(rec.name, acc.now(), acc.config.fail_interval,
                                     limit) is None:
            yield from self._lock_now(rec, limit)
            return
        password_ok = True
        if password is not None:
            password_ok = yield VerifyPassword(rec.password_hash, password)

        exempt = policy.exemption(acc.groups_of(rec.name), req.rhost, acc.config)
        if state is MfaState.ACTIVE:
            yield from self._check_code(rec, password_ok, code or "", limit, exempt)
        elif not password_ok:
            if state is not MfaState.OFF:
                yield Prompt(CODE_PROMPT)  # look like an enrolled user's failure
            yield from self._failed_attempt(rec, limit, "wrong_password")
        elif exempt:
            yield from self._exempted(rec, exempt)
        elif state is MfaState.PENDING:
            yield from self._enroll(rec, limit)
        elif state is MfaState.EXPIRED:
            acc.store.reset_failures(rec.name)
            self._audit("login_fail", reason="enrollment_expired")
            yield Error(EXPIRED_TEXT)
            yield Verdict(ACCT_EXPIRED, delay=True)
        elif acc.config.require_mfa_for_all:
            acc.store.reset_failures(rec.name)
            self._audit("login_fail", reason="mfa_required_for_all")
            yield Error("Multi-factor authentication is required but not set up for your "
                        "account. Contact your administrator.")
            yield Verdict(PERM_DENIED, delay=True)
        else:
            yield from self._success(rec, how="password_only" if req.password_factor
                                     else "no_mfa")

    def _success(self, rec: UserRecord, **fields: object) -> Conversation:
        self.acc.store.reset_failures(rec.name)
        if not self._audit("login_ok", **fields):
            yield Verdict(AUTH_ERR, delay=True)  # audit_failure: deny
            return
        if not self.req.password_factor and fields.get("how") == "no_mfa":
            yield Verdict(IGNORE)  # nothing of ours was checked: no opinion
            return
        yield Verdict(SUCCESS)

    def _exempted(self, rec: UserRecord, why: str) -> Conversation:
        self.acc.store.reset_failures(rec.name)
        if not self._audit("exempted", reason=why):
            yield Verdict(AUTH_ERR, delay=True)
            return
        # Without a password factor an exemption means "no opinion", so a
        # `sufficient` line can never turn it into a password bypass.
        yield Verdict(SUCCESS if self.req.password_factor else IGNORE)

    def _locked(self, rec: UserRecord) -> Conversation:
        """Prompts as usual, checks nothing, refuses: reveals nothing about the password."""
        if self.req.password_factor and self.req.authtok is None:
            yield Prompt(PASSWORD_PROMPT)
        if self.acc.state(rec) is MfaState.ACTIVE:
            yield Prompt(CODE_PROMPT)
        yield Error(self._locked_text(rec))
        yield from self._fail("locked", MAXTRIES)

    def _lock_now(self, rec: UserRecord, limit: int) -> Conversation:
        self.acc.lock_if_exhausted(rec.name, limit)
        rec = self.acc.get(rec.name) or rec
        yield Error(self._locked_text(rec))
        yield from self._fail("locked", MAXTRIES)

    def _failed_attempt(self, rec: UserRecord, limit: int, reason: str) -> Conversation:
        acc = self.acc
        if acc.lock_if_exhausted(rec.name, limit):
            yield Error(self._locked_text(acc.get(rec.name) or rec))
        yield from self._fail(reason)

    def _check_code(self, rec: UserRecord, password_ok: bool, code: str, limit: int,
                    exempt: str | None) -> Conversation:
        acc = self.acc
        if password_ok and exempt and not code.strip():
            yield from self._exempted(rec, exempt)
            return
        secret = acc.active_secret(rec)
        assert secret is not None
        check = acc.check_code(rec, secret, code, consume=password_ok)
        if password_ok and check.ok:
            if check.reason == "recovery":
                self._audit("recovery_code_used")
            yield from self._success(rec, how=check.reason)
            return
        if check.reason == "replay":
            self._audit("replay_refused")
        reason = "wrong_password" if not password_ok else check.reason
        yield from self._failed_attempt(rec, limit, reason)

    def _enroll(self, rec: UserRecord, limit: int) -> Conversation:
        acc = self.acc
        secret = acc.pending_secret(rec)
        days = acc.days_left(rec)
        yield Info("Multi-factor authentication is required for your account; "
                   f"{days} day(s) left to set it up.\n" + acc.enrollment_text(rec.name, secret))
        for attempt in range(acc.config.enrollment_attempts):
            answer = (yield Prompt(ENROLL_PROMPT, echo=True)).strip()
            if not answer:
                acc.store.reset_failures(rec.name)
                self._audit("enrollment_skipped", days_left=days)
                if not self._audit("login_ok", how="enrollment_skipped"):
                    yield Verdict(AUTH_ERR, delay=True)
                    return
                yield Info(f"Enrollment skipped. You have {days} day(s) left to set up "
                           "multi-factor authentication; after that you cannot log in.")
                yield Verdict(SUCCESS)
                return
            step = acc.totp.match(secret, answer, acc.now())
            if step is not None:
                codes = acc.activate(rec.name, secret, step)
                self._audit("enrolled")
                yield Info("Multi-factor authentication is now active.\n"
                           + acc.recovery_text(codes))
                yield Prompt(ACK_PROMPT, echo=True)
                yield from self._success(rec, how="enrolled")
                return
            if attempt + 1 < acc.config.enrollment_attempts:
                yield Error("That code is not right. Check the time on your phone and "
                            "try the current code.")
        yield from self._failed_attempt(rec, limit, "wrong_enrollment_code")
