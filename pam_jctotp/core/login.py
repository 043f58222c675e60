"""The PAM login conversation: a sans-I/O state machine (see steps.py).

Rules, in one place:
1. Password first (or the earlier module's PAM_AUTHTOK with use_first_pass),
   then the code. With factors=totp there is no password: the first factor
   was checked by an earlier module or by sshd (publickey).
2. Unknown names behave like a user of the default state: MFA off (what
   `jctotp user add` makes), or enrolled with `require_mfa_for_all: true`.
   The same prompts, a dummy argon2 verify for equal work, and the same
   lockout.begin/failed against a failure counter of names nobody has
   (store/unknown_names.py) that locks them after max_attempts like a real
   name; every failure is held back to
   the same `fail_delay` by the server. (With factors=totp the first factor
   already named a real account: they get the code prompt and fail.)
3. Every login of a known user reserves one attempt BEFORE any factor is
   checked (lockout.begin); a locked account or a used-up window gets no
   check at all. Success resets the counter. So N parallel guesses are
   counted N times and never exceed the limit.
4. A locked account (policy.is_locked) is refused in auth (after the
   prompts, whatever was typed) and in account (so publickey logins are
   refused too).
5. A code is accepted once: its time-step must be newer than the last.
6. Inside the enrollment period a right password shows the QR code and asks
   for a code (enrollment.confirm); empty skips; after the deadline the
   login is refused. "Enroll now" (no period) enrolls the same way but Enter
   does not skip, and acct_mgmt refuses until enrolled.
7. Exempt users (group or source) skip the code, never the password; with
   factors=totp they get IGNORE, never SUCCESS.
8. A conversation abandoned half-way (the client gone, see run()) is audited
   as `abandoned` and counts nothing: an attempt reserved before a wrong
   factor was found is given back; a wrong factor is counted before any
   further prompt, so leaving early never dodges the count. A grant is
   audited once its verdict reached the shim (the driver says whether it
   did): a shim gone by then means PAM refused, so it is `abandoned` too.
"""

from __future__ import annotations

import logging

from ..errors import JctotpError, StoreUnavailable
from ..model import CodeOutcome, LoginHow, LoginRequest, MfaState, Refusal, UserRecord, VerdictCode
from ..secret import Secret
from . import chauthtok, enrollment, lockout, policy, provisioning
from .accounts import Accounts
from .enrollment import Outcome
from .lockout import Attempt
from .steps import Conversation, Error, Info, Prompt, Verdict, VerifyPassword

__all__ = ["Login", "LoginRequest"]

log = logging.getLogger("jctotpd")
# Refusals of names the directory does not know also go to auth.log (the
# daemon wires this logger to syslog LOG_AUTHPRIV, names escaped), as sshd's do.
auth_log = logging.getLogger("jctotpd.auth")

# The directory's password (the local argon2 table or LDAP), not the Unix one:
# with pam_unix in the same stack a plain "Password:" would be ambiguous.
PASSWORD_PROMPT = "Directory password: "
CODE_PROMPT = "Verification code: "
ENROLL_PROMPT = enrollment.SKIP_PROMPT
ENROLL_NOW_PROMPT = enrollment.CONFIRM_PROMPT
ACK_PROMPT = enrollment.ACK_PROMPT
LOCKED_TEXT = ("Your account is locked after too many failed attempts. "
               "Contact your administrator{until}.")
EXPIRED_TEXT = ("Your multi-factor authentication enrollment period has ended. "
                "Contact your administrator to reset it.")
MFA_FOR_ALL_TEXT = ("Multi-factor authentication is required but not set up for your "
                    "account. Contact your administrator.")
ENROLL_NOW_TEXT = ("Multi-factor authentication must be set up before you can log in: "
                   "log in with your password to see the QR code.")

V = VerdictCode


class Login:
    def __init__(self, accounts: Accounts, req: LoginRequest) -> None:
        self.acc = accounts
        self.req = req
        self.attempt: Attempt | None = None  # reserved, maybe not yet settled

    def _audit(self, event: str, **fields: object) -> bool:
        return self.acc.audit(event, self.req.user, service=self.req.service,
                              rhost=self.req.rhost, tty=self.req.tty, **fields)

    def _fail(self, reason: Refusal | CodeOutcome,
              code: VerdictCode = V.AUTH_ERR) -> Conversation:
        self._audit("login_fail", reason=reason)
        yield Verdict(code, delay=True)

    def _refused_unknown(self) -> None:
        auth_log.warning("refused user %s: not in the directory (%s, service %s, rhost %s)",
                         self.req.user, self.req.call, self.req.service, self.req.rhost or "-")

    def _locked_text(self, rec: UserRecord) -> str:
        until = policy.locked_until(rec, self.acc.config)
        if until is None:
            return LOCKED_TEXT.format(until="")
        minutes = max(1, round((until - self.acc.lock_now()) / 60))
        return LOCKED_TEXT.format(until=f" or try again in {minutes} min")

    def run(self) -> Conversation:
        """The PAM call's conversation. Closed before its verdict (the driver does
        that when the client left), it records the abandonment (rule 8)."""
        if self.req.call in ("passwd", "passwd_prelim"):
            conv = chauthtok.conversation(self.acc, self.req)
        else:
            conv = self.account() if self.req.call == "acct" else self.authenticate()
        ended = False
        try:
            step = next(conv)
            while True:
                ended = isinstance(step, Verdict)
                step = conv.send((yield step))
        except StopIteration:
            return
        except GeneratorExit:
            conv.close()
            if not ended:
                self._abandoned()
            raise
        except StoreUnavailable:
            # failed closed for an outage: a refusal the audit keeps (spooled, issue 22)
            if self.req.call not in ("passwd", "passwd_prelim"):
                self._audit("acct_refused" if self.req.call == "acct" else "login_fail",
                            reason=Refusal.DATABASE_UNAVAILABLE)
            raise

    def _abandoned(self) -> None:
        if self.req.call in ("acct", "passwd_prelim"):
            return
        try:
            if self.attempt is not None and not self.attempt.settled:
                lockout.release(self.acc, self.attempt)
            self._audit("abandoned")
        except JctotpError as exc:  # cleanup of a dead conversation: log, never raise
            log.error("could not record an abandoned login of %s: %s", self.req.user, exc)

    # --- pam_sm_acct_mgmt --------------------------------------------------

    def account(self) -> Conversation:
        acc = self.acc
        rec = provisioning.record(acc, self.req.user)
        if rec is None:
            if acc.config.unknown_users != "ignore":
                self._refused_unknown()
            yield Verdict(V.IGNORE if acc.config.unknown_users == "ignore" else V.USER_UNKNOWN)
            return
        if provisioning.left_directory(acc, rec):  # e.g. a key login of a removed user
            self._audit("acct_refused", reason=Refusal.NOT_IN_DIRECTORY)
            yield Error(provisioning.LEFT_TEXT)
            yield Verdict(V.PERM_DENIED)
            return
        if acc.is_locked(rec):
            self._audit("acct_refused", reason=Refusal.LOCKED)
            yield Error(self._locked_text(rec))
            yield Verdict(V.PERM_DENIED)
            return
        state = acc.state(rec)
        if state is MfaState.EXPIRED:
            self._audit("acct_refused", reason=Refusal.ENROLLMENT_EXPIRED)
            yield Error(EXPIRED_TEXT)
            yield Verdict(V.ACCT_EXPIRED)
            return
        if state is MfaState.ENROLL_NOW:  # e.g. publickey alone: no grace, no way around
            self._audit("acct_refused", reason=Refusal.ENROLLMENT_REQUIRED)
            yield Error(ENROLL_NOW_TEXT)
            yield Verdict(V.PERM_DENIED)
            return
        if state is MfaState.OFF and acc.config.require_mfa_for_all:
            self._audit("acct_refused", reason=Refusal.MFA_REQUIRED_FOR_ALL)
            yield Error(MFA_FOR_ALL_TEXT)
            yield Verdict(V.PERM_DENIED)
            return
        yield Verdict(V.SUCCESS)

    # --- pam_sm_authenticate ----------------------------------------------

    def authenticate(self) -> Conversation:
        req, acc = self.req, self.acc
        rec = provisioning.record(acc, req.user)
        if rec is None:
            if not req.password_factor and acc.config.unknown_users == "ignore":
                yield Verdict(V.IGNORE)
                return
            yield from self._unknown()
            return
        if acc.is_locked(rec):
            yield from self._locked(rec)
            return
        state = acc.state(rec)
        password = None
        if req.password_factor:
            password = req.authtok
            if password is None:
                password = Secret((yield Prompt(PASSWORD_PROMPT)))
        code = None
        if state is MfaState.ACTIVE:
            code = yield Prompt(CODE_PROMPT)  # asked before any check: reveals nothing

        attempt = self.attempt = lockout.begin(acc, rec)
        if attempt is None:
            yield Error(self._locked_text(acc.get(rec.name) or rec))
            yield from self._fail(Refusal.LOCKED, V.MAXTRIES)
            return
        password_ok = True
        if password is not None:
            password_ok = yield VerifyPassword(rec.name, password)

        exempt = policy.exemption(acc.groups_if(acc.config.exempt_groups, rec.name),
                                  req.rhost, acc.config)
        yield from self._decide(rec, state, attempt, password_ok, code, exempt)

    def _decide(self, rec: UserRecord, state: MfaState, attempt: Attempt, password_ok: bool,
                code: str | None, exempt: str | None) -> Conversation:
        """After the password and the code were asked: the outcome for this state."""
        req, acc = self.req, self.acc
        if state is MfaState.ACTIVE:
            yield from self._check_code(rec, attempt, password_ok, code or "", exempt)
        elif not password_ok:
            # Counted before the look-alike code prompt: leaving there dodges nothing.
            locked = lockout.failed(acc, attempt)
            if state is not MfaState.OFF:
                yield Prompt(CODE_PROMPT)  # look like an enrolled user's failure
            yield from self._refuse(rec, locked, Refusal.WRONG_PASSWORD)
        elif exempt:
            yield from self._exempted(attempt, exempt)
        elif state in (MfaState.PENDING, MfaState.ENROLL_NOW):
            yield from self._enroll(rec, attempt, may_skip=state is MfaState.PENDING)
        elif state is MfaState.EXPIRED:
            lockout.succeeded(acc, attempt)  # the password was right: not a guess
            self._audit("login_fail", reason=Refusal.ENROLLMENT_EXPIRED)
            yield Error(EXPIRED_TEXT)
            yield Verdict(V.ACCT_EXPIRED, delay=True)
        elif acc.config.require_mfa_for_all:
            lockout.succeeded(acc, attempt)
            self._audit("login_fail", reason=Refusal.MFA_REQUIRED_FOR_ALL)
            yield Error(MFA_FOR_ALL_TEXT)
            yield Verdict(V.PERM_DENIED, delay=True)
        else:
            yield from self._success(attempt, how=LoginHow.PASSWORD_ONLY if req.password_factor
                                     else LoginHow.NO_MFA)

    def _unknown(self) -> Conversation:
        """A name the directory does not know, shown as a user of the default state
        would be: same prompts, same work, the same lockout calls against the
        counters of names nobody has (rule 2)."""
        req, acc, cfg = self.req, self.acc, self.acc.config
        name = req.user
        password = req.authtok
        if req.password_factor and password is None:
            password = Secret((yield Prompt(PASSWORD_PROMPT)))
        if not req.password_factor or cfg.require_mfa_for_all:
            yield Prompt(CODE_PROMPT)  # where every real user has MFA, look enrolled
        attempt = self.attempt = lockout.begin(acc, acc.unknown.get(name), unknown=True)
        if attempt is None:
            yield Error(self._locked_text(acc.unknown.get(name)))
            self._refused_unknown()
            yield from self._fail(Refusal.UNKNOWN_USER, V.MAXTRIES)
            return
        if password is not None:
            yield VerifyPassword(None, password)  # same work as a real check
        if lockout.failed(acc, attempt):
            yield Error(self._locked_text(acc.unknown.get(name)))
        self._refused_unknown()
        yield from self._fail(Refusal.UNKNOWN_USER)

    def _grant(self, code: VerdictCode | Verdict, event: str, **fields: object) -> Conversation:
        """A grant is audited once the shim has the verdict (the driver sends
        whether it arrived): `event` if it did, `abandoned` if the shim was gone
        and PAM refused the login. With `audit_failure: deny` the log must be
        writable before anything is granted."""
        acc = self.acc
        if acc.config.audit_failure == "deny" and not acc.audit_log.writable():
            yield Verdict(V.AUTH_ERR, delay=True)
            return
        delivered = yield code if isinstance(code, Verdict) else Verdict(code)
        if delivered is False:
            self._audit("abandoned", outcome=event, **fields)
        else:
            self._audit(event, **fields)

    def _success(self, attempt: Attempt, counter_reset: bool = False,
                 **fields: object) -> Conversation:
        lockout.succeeded(self.acc, attempt, counter_reset)
        if not self.req.password_factor and fields.get("how") is LoginHow.NO_MFA:
            yield from self._grant(V.IGNORE, "login_ok", **fields)  # nothing of ours checked
            return
        # Not locked (just reset), MFA active or rightly off: account() says SUCCESS too,
        # provided the directory still knows the user: checked by the password here,
        # or never in question (a directory that does not provision, e.g. the local
        # table). A code-only login through LDAP does not vouch: account() asks LDAP.
        # (An exemption or a skipped enrollment does not vouch: account() decides those.)
        vouch = self.req.password_factor or not self.acc.directory.provisions
        yield from self._grant(Verdict(V.SUCCESS, account_ok=vouch), "login_ok", **fields)

    def _exempted(self, attempt: Attempt, why: str) -> Conversation:
        lockout.succeeded(self.acc, attempt)
        # Without a password factor an exemption means "no opinion", so a
        # `sufficient` line can never turn it into a password bypass.
        yield from self._grant(V.SUCCESS if self.req.password_factor else V.IGNORE,
                               "exempted", reason=why)

    def _locked(self, rec: UserRecord) -> Conversation:
        """Prompts as usual, checks nothing, refuses: reveals nothing about the password."""
        if self.req.password_factor and self.req.authtok is None:
            yield Prompt(PASSWORD_PROMPT)
        if self.acc.state(rec) is MfaState.ACTIVE:
            yield Prompt(CODE_PROMPT)
        yield Error(self._locked_text(rec))
        yield from self._fail(Refusal.LOCKED, V.MAXTRIES)

    def _failed_attempt(self, rec: UserRecord, attempt: Attempt,
                        reason: Refusal | CodeOutcome) -> Conversation:
        yield from self._refuse(rec, lockout.failed(self.acc, attempt), reason)

    def _refuse(self, rec: UserRecord, locked: bool,
                reason: Refusal | CodeOutcome) -> Conversation:
        if locked:
            yield Error(self._locked_text(self.acc.get(rec.name) or rec))
        yield from self._fail(reason)

    def _check_code(self, rec: UserRecord, attempt: Attempt, password_ok: bool, code: str,
                    exempt: str | None) -> Conversation:
        acc = self.acc
        if password_ok and exempt and not code.strip():
            yield from self._exempted(attempt, exempt)
            return
        # a right code is a success: its step and the counter's reset, one statement
        check = acc.check_code(rec, code, consume=password_ok,
                               reset_failures=password_ok)
        if password_ok and check.ok:
            if check.reason is CodeOutcome.RECOVERY:
                self._audit("recovery_code_used")
            yield from self._success(attempt, counter_reset=check.reason is CodeOutcome.TOTP,
                                     how=LoginHow(check.reason))
            return
        if check.reason is CodeOutcome.REPLAY:
            self._audit("replay_refused")
        reason = Refusal.WRONG_PASSWORD if not password_ok else check.reason
        yield from self._failed_attempt(rec, attempt, reason)

    def _enroll(self, rec: UserRecord, attempt: Attempt, may_skip: bool) -> Conversation:
        acc = self.acc
        days = acc.days_left(rec)
        secret, sealed = acc.pending_key(rec)
        intro = ("Multi-factor authentication is required for your account; "
                 + (f"{days} day(s) left to set it up.\n" if may_skip
                    else "set it up now to log in.\n"))
        outcome = yield from enrollment.confirm(acc, rec.name, secret, may_skip=may_skip,
                                                intro=intro, pending=sealed)
        if outcome is Outcome.SKIPPED:
            lockout.succeeded(acc, attempt)
            self._audit("enrollment_skipped", days_left=days)
            yield Info(f"Enrollment skipped. You have {days} day(s) left to set up "
                       "multi-factor authentication; after that you cannot log in.")
            yield from self._grant(V.SUCCESS, "login_ok", how=LoginHow.ENROLLMENT_SKIPPED)
        elif outcome is Outcome.ENROLLED:
            self._audit("enrolled")
            yield Info("Multi-factor authentication is now active.")
            yield from self._success(attempt, how=LoginHow.ENROLLED)
        elif outcome is Outcome.STALE:
            lockout.succeeded(acc, attempt)  # the password was right: not a guess
            yield from self._fail(Refusal.ENROLLMENT_KEY_WITHDRAWN)
        else:
            yield from self._failed_attempt(rec, attempt, Refusal.WRONG_ENROLLMENT_CODE)
