"""Domain operations on directory users, shared by logins and CLI verbs.

Holds the daemon's long-lived pieces (config, store, encryption, TOTP, clock,
audit) and turns them into the few operations every flow needs: look a user
up, decide their state and limits, check a code once, run an enrollment.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Callable

from . import policy, qr, system
from .audit import AuditLog
from .clock import Clock
from .config import Config
from .crypto import SecretBox
from .policy import MfaState
from .secret import Secret
from .store import Store, UserRecord
from .totp import Totp, new_recovery_codes

log = logging.getLogger("jctotpd")

TOTP_PURPOSE = "totp"
PENDING_PURPOSE = "totp-pending"


@dataclass(frozen=True)
class CodeCheck:
    ok: bool
    reason: str          # "totp" | "recovery" | "wrong_code" | "replay" | "no_code"
    step: int | None = None


class Accounts:
    def __init__(self, config: Config, store: Store, box: SecretBox, clock: Clock,
                 audit: AuditLog,
                 groups_of: Callable[[str], frozenset[str]] = system.groups_of) -> None:
        self.config = config
        self.store = store
        self.box = box
        self.clock = clock
        self.audit_log = audit
        self.groups_of = groups_of
        self.totp = Totp(config.totp_digits, config.totp_period, config.totp_window)
        self.host = socket.gethostname()
        # One empty file per locked user, read by the shim only when the
        # daemon is unreachable and failmode=open: a locked account stays
        # locked even then. Persistent (state_dir), so it survives a reboot.
        self.lock_dir = os.path.join(config.state_dir, "locked")

    # --- locks -------------------------------------------------------------

    def _mark(self, name: str, locked: bool) -> None:
        path = os.path.join(self.lock_dir, name)
        try:
            if locked:
                os.makedirs(self.lock_dir, mode=0o700, exist_ok=True)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("lock marker %s: %s (failmode=open would not see this lock)", path, exc)

    def sync_lock_markers(self) -> None:
        """At start: one marker per locked user, none for anyone else."""
        os.makedirs(self.lock_dir, mode=0o700, exist_ok=True)
        locked = {r.name for r in self.store.list() if r.locked_at is not None}
        for name in set(os.listdir(self.lock_dir)) - locked:
            self._mark(name, False)
        for name in locked:
            self._mark(name, True)

    def lock_if_exhausted(self, name: str, limit: int) -> bool:
        """After a failed attempt: lock when the window's count reached the limit."""
        if not self.store.lock_if_exhausted(name, self.now(), limit, "too many attempts"):
            return False
        self._mark(name, True)
        self.audit("locked", name, reason=f"{limit} failed attempts")
        return True

    def unlock(self, name: str) -> None:
        self.store.unlock(name)
        self._mark(name, False)

    # --- lookups ---------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def get(self, name: str) -> UserRecord | None:
        rec = self.store.get(name)
        if rec is not None and rec.locked_at is not None:
            if self.store.expire_lock(name, self.now(), self.config.unlock_after):
                self._mark(name, False)
                self.audit("unlocked", name, reason="unlock_after elapsed")
                rec = self.store.get(name)
        return rec

    def is_admin(self, rec: UserRecord) -> bool:
        return policy.is_admin(rec, self.groups_of(rec.name), self.config)

    def limit(self, rec: UserRecord) -> int:
        return policy.attempt_limit(rec, self.config, self.is_admin(rec))

    def state(self, rec: UserRecord) -> MfaState:
        return policy.mfa_state(rec, self.now())

    def days_left(self, rec: UserRecord) -> int:
        return policy.days_left(rec.enroll_deadline, self.now())

    def audit(self, event: str, user: str | None, **fields: object) -> bool:
        """Write an audit event; False only when it failed AND policy says deny."""
        written = self.audit_log.write(event, user, now=self.now(), **fields)
        return written or self.config.audit_failure == "continue"

    # --- secrets ---------------------------------------------------------

    def active_secret(self, rec: UserRecord) -> Secret | None:
        if rec.totp_secret is None:
            return None
        return self.box.open(rec.totp_secret, rec.name, TOTP_PURPOSE)

    def pending_secret(self, rec: UserRecord) -> Secret:
        """The secret awaiting confirmation; made once and kept until enrolled,
        so a user who scanned it yesterday can finish today."""
        if rec.pending_secret is not None:
            return self.box.open(rec.pending_secret, rec.name, PENDING_PURPOSE)
        secret = Totp.new_secret()
        self.store.update(rec.name,
                          pending_secret=self.box.seal(secret, rec.name, PENDING_PURPOSE))
        return secret

    def otpauth_uri(self, name: str, secret: Secret) -> str:
        account = self.config.account_name.format(user=name, host=self.host)
        return qr.otpauth_uri(secret, account, self.config.issuer, self.totp.digits,
                              self.totp.period)

    def enrollment_text(self, name: str, secret: Secret) -> str:
        uri = self.otpauth_uri(name, secret)
        return (
            "Scan this QR code with your authenticator app "
            "(Google Authenticator, FreeOTP, JumpCloud Protect, ...):\n\n"
            f"{qr.terminal_qr(uri)}\n\n"
            f"Or enter this key by hand: {qr.grouped_key(secret)}\n"
            f"URI: {uri}\n"
            "Store this key somewhere safe: it restores your authenticator on a new phone.\n"
        )

    # --- codes -----------------------------------------------------------

    def check_code(self, rec: UserRecord, secret: Secret, answer: str,
                   consume: bool) -> CodeCheck:
        """Is `answer` a current code (or an unused recovery code) of `secret`?

        With consume=True an accepted code's step is recorded atomically, so
        the same or an older step is refused later (replay), and a recovery
        code is used up. With consume=False nothing changes (e.g. the
        password was wrong: a right code must not be burnt).
        """
        answer = answer.strip()
        if not answer:
            return CodeCheck(False, "no_code")
        step = self.totp.match(secret, answer, self.now())
        if step is not None:
            if not consume:
                return CodeCheck(True, "totp", step)
            if self.store.accept_step(rec.name, step):
                return CodeCheck(True, "totp", step)
            return CodeCheck(False, "replay", step)
        if len(answer) > self.totp.digits and rec.totp_secret is not None:
            digest = self.box.recovery_hash(rec.name, answer)
            if not consume:
                return CodeCheck(False, "wrong_code")  # unknowable without using it
            if self.store.use_recovery_code(rec.name, digest, self.now()):
                return CodeCheck(True, "recovery")
        return CodeCheck(False, "wrong_code")

    def activate(self, name: str, secret: Secret, step: int | None) -> list[str]:
        """Make `secret` the user's TOTP secret; returns new recovery codes (shown once)."""
        codes = new_recovery_codes(self.config.recovery_codes)
        with self.store.transaction():
            self.store.update(name, totp_secret=self.box.seal(secret, name, TOTP_PURPOSE),
                              pending_secret=None, last_step=step if step is not None else -1,
                              enrolled_at=self.now())
            self.store.replace_recovery_codes(name,
                                              [self.box.recovery_hash(name, c) for c in codes])
        return codes

    def new_recovery_codes(self, name: str) -> list[str]:
        codes = new_recovery_codes(self.config.recovery_codes)
        self.store.replace_recovery_codes(name, [self.box.recovery_hash(name, c) for c in codes])
        return codes

    def start_enrollment(self, name: str, days: int) -> None:
        """Require MFA with a fresh period; drops every secret and recovery code."""
        with self.store.transaction():
            self.store.update(name, mfa_required=1, totp_secret=None, pending_secret=None,
                              enroll_deadline=self.now() + days * policy.DAY,
                              last_step=-1, enrolled_at=None)
            self.store.clear_recovery_codes(name)

    @staticmethod
    def recovery_text(codes: list[str]) -> str:
        lines = "\n".join(f"  {c}" for c in codes)
        return ("Recovery codes — each works once instead of a verification code. "
                "Store them safely now; they will not be shown again:\n" + lines + "\n")
