"""Domain operations on directory users, shared by logins and CLI verbs.

Holds the daemon's long-lived pieces (config, store, directory, encryption,
TOTP, clock, audit) behind small interfaces, and turns them into the few
operations every flow needs: look a user up (a pure read), decide their state
and limits, check a code once, activate a secret.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..clock import Clock
from ..config import Config
from ..crypto import SecretBox
from ..directory import Directory, SystemAccounts
from ..errors import StoreError
from ..model import CodeOutcome, MfaState, UserRecord
from ..secret import Secret
from ..store import Store
from ..store.unknown_names import UnknownNames
from . import mfa_lifecycle, notices, policy, qr
from .mfa_lifecycle import PENDING_PURPOSE, TOTP_PURPOSE, StaleKey
from .portal_state import NoOutbox, Outbox, PortalState
from .totp import Totp, decode_key, new_recovery_codes

log = logging.getLogger("jctotpd")

CLOCK_TOLERANCE = 5.0   # seconds a host's clock may be off the fleet database's (doctor)
__all__ = ["Accounts", "CodeCheck", "StaleKey", "PENDING_PURPOSE", "TOTP_PURPOSE"]
PENDING_KEPT = 1000     # enrollment keys one process keeps for their confirmation


class AuditSink(Protocol):
    def write(self, event: str, user: str | None = None, *, now: float | None = None,
              **fields: Any) -> bool: ...

    def events(self, user: str | None = None, since: float | None = None,
               host: str | None = None) -> Iterator[dict[str, Any]]: ...

    def writable(self) -> bool: ...

    def hosts(self) -> list[str]: ...

    def verify(self) -> dict[str, Any]: ...


class LockMarks(Protocol):
    def mark(self, name: str, locked: bool) -> None: ...


class _NoMarks:
    def mark(self, name: str, locked: bool) -> None:
        pass


@dataclass(frozen=True)
class CodeCheck:
    ok: bool
    reason: CodeOutcome
    step: int | None = None


class Accounts:
    def __init__(self, config: Config, store: Store, directory: Directory,
                 system: SystemAccounts, box: SecretBox, clock: Clock, audit: AuditSink,
                 markers: LockMarks | None = None) -> None:
        self.config = config
        self.store = store
        self.directory = directory
        self.system = system
        self.box = box
        self.clock = clock
        self.audit_log = audit
        self.markers: LockMarks = markers or _NoMarks()
        self.totp = Totp(config.totp_digits, config.totp_period, config.totp_window)
        self.host = os.uname().nodename
        self.unknown = UnknownNames()  # failure counters of names nobody has
        self.portal = PortalState()       # the User Portal's sessions and reset links
        self.outbox: Outbox = NoOutbox()  # mails (smtp:), queued: never block a verb
        # The directory sync's (directory_sync.py): records whose user left the
        # directory ("left") or the login groups, and its findings for `jctotp doctor`.
        self.departed: dict[str, str] = {}
        self.account_findings: Callable[[], list[tuple[str, str]]] = list
        self.fleet_policy: Any = None     # `jctotp policy` (fleet/policy.py), set by jctotpd
        # told the new config after a reload or a fleet policy change (daemon/build.swap):
        # the directory sync reads at once when its groups changed
        self.config_watchers: list[Callable[[Config], None]] = []
        # name -> (id, secret): keys shown for enrollment that the store cannot give back
        self._pending: dict[str, tuple[bytes, Secret]] = {}

    # --- lookups: pure reads (a read never lifts a lock: lockout.begin does) ---

    def now(self) -> float:
        return self.clock.now()

    def lock_now(self) -> float:
        """The time of locks and failure windows: in a fleet the database's clock (with
        the test offset), never this host's, which may be off (store/dbclock.py);
        this host's clock on SQLite, or before the database was first read."""
        shared = self.store.database_now()
        return self.now() if shared is None else shared + self.clock.offset

    def get(self, name: str) -> UserRecord | None:
        return self.store.get(name)

    def clock_findings(self) -> list[tuple[str, str]]:
        """For doctor: this host's clock against the fleet database's, read now (the
        test offset moves both alike)."""
        try:
            shared = self.store.database_now(fresh=True)
        except StoreError:
            return []   # the store's own findings say the database is unavailable
        if shared is None:
            return []
        ahead = self.now() - (shared + self.clock.offset)
        try:   # whose clock checks the codes (store/pg_codecheck.py)
            hosts = self.store.code_clock() == "host"   # type: ignore[attr-defined]
        except (AttributeError, StoreError):
            hosts = False
        which = ("TOTP codes are checked against this host's clock (the fleet's owner set "
                 "clock 'host'), locks against the database's" if hosts else
                 "the database's clock is the authority: codes and locks are checked "
                 "against it; this host's stamps its audit and checks break-glass logins "
                 "in an outage")
        if abs(ahead) <= CLOCK_TOLERANCE:
            return [("ok", f"this host's clock is within {CLOCK_TOLERANCE:g} s of the fleet "
                     f"database's clock ({which})")]
        level = "fail" if abs(ahead) > self.totp.period else "warn"
        return [(level, f"this host's clock is {abs(ahead):.0f} s "
                 f"{'ahead of' if ahead > 0 else 'behind'} the fleet database's clock: "
                 f"{which}; synchronize it (NTP)")]

    def groups_of(self, name: str) -> frozenset[str]:
        return self.directory.groups_of(name)

    def groups_if(self, configured: tuple[str, ...], name: str) -> frozenset[str]:
        """The user's groups when `configured` (the groups they would be compared
        with) names any; else none, without asking: an NSS or LDAP lookup costs a
        login 30-200 us, and nothing intersects an empty list."""
        return self.groups_of(name) if configured else frozenset()

    def is_admin(self, rec: UserRecord) -> bool:
        return policy.is_admin(rec, self.groups_if(self.config.admin_groups, rec.name),
                               self.config)

    def limit(self, rec: UserRecord) -> int:
        return policy.attempt_limit(rec, self.config, self.is_admin(rec))

    def state(self, rec: UserRecord) -> MfaState:
        return policy.mfa_state(rec, self.now())

    def is_locked(self, rec: UserRecord) -> bool:
        return policy.is_locked(rec, self.lock_now(), self.config)

    def days_left(self, rec: UserRecord) -> int:
        return policy.days_left(rec.enroll_deadline, self.now())

    def audit(self, event: str, user: str | None, **fields: object) -> bool:
        """Write an audit event; False only when it failed AND policy says deny."""
        written = self.audit_log.write(event, user, now=self.now(), **fields)
        try:
            notices.on_event(self, event, user, fields)  # the mails follow the audit
        except Exception:  # a mail is never a reason to fail a login or a verb
            log.exception("could not queue the mail for %s of %s", event, user)
        return written or self.config.audit_failure == "continue"

    # --- secrets ---------------------------------------------------------

    def active_secret(self, rec: UserRecord) -> Secret:
        if rec.totp_secret is None:
            raise ValueError(f"{rec.name} has no active TOTP secret")
        return self.box.open(rec.totp_secret, rec.name, TOTP_PURPOSE)

    def pending_key(self, rec: UserRecord) -> tuple[Secret, bytes]:
        """The secret awaiting confirmation, and its stored ciphertext; made once and
        kept until enrolled (or the password changes), so a user who scanned it
        yesterday can finish today.

        A store that keeps the keys (the fleet database) never gives one back: the
        record holds only a random id, the secret stays in this process until it is
        confirmed (the portal's enroll and confirm), and a login that cannot show
        it again shows a new one."""
        if getattr(self.store, "put_key", None) is not None:
            kept = self._pending.get(rec.name)
            if kept is not None and rec.pending_secret == kept[0]:
                return kept[1], kept[0]
            secret, token = Totp.new_secret(), os.urandom(16)
            self.store.update(rec.name, pending_secret=token)
            if len(self._pending) >= PENDING_KEPT:
                self._pending.pop(next(iter(self._pending)))
            self._pending[rec.name] = (token, secret)
            return secret, token
        if rec.pending_secret is not None:
            return self.box.open(rec.pending_secret, rec.name, PENDING_PURPOSE), rec.pending_secret
        secret = Totp.new_secret()
        sealed = self.box.seal(secret, rec.name, PENDING_PURPOSE)
        self.store.update(rec.name, pending_secret=sealed)
        return secret, sealed

    def password_changed(self, name: str, actor: str) -> None:
        """After any password change: drop a pending (unconfirmed) key. Whoever saw it
        with the old password must not be able to finish that enrollment."""
        self.store.update(name, pending_secret=None)
        self.audit("password_changed", name, actor=actor)

    def account_label(self, name: str) -> str:
        """config account_name with its placeholders filled. A user without an
        e-mail address gets {user}@{host} for {email}: still an address-like label.
        In a fleet {host} is the fleet's name: one key serves every host, so the app's
        entry must not name the host that happened to enroll the user (issue 21)."""
        rec = self.get(name)
        host = self.config.fleet_name or self.host
        email = rec.email if rec is not None and rec.email else f"{name}@{host}"
        return self.config.account_name.format(user=name, host=host, email=email)

    def otpauth_uri(self, name: str, secret: Secret) -> str:
        account = self.account_label(name)
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

    def check_code(self, rec: UserRecord, answer: str, consume: bool,
                   reset_failures: bool = False) -> CodeCheck:
        """Is `answer` a current code (or an unused recovery code) of the user's key?

        With consume=True an accepted code's step is recorded atomically, so
        the same or an older step is refused later (replay), and a recovery
        code is used up. With consume=False nothing changes (e.g. the
        password was wrong: a right code must not be burnt). With
        reset_failures, an accepted TOTP code also starts the failure counter
        over, in the same statement (the login's success; reason "totp").

        A store that keeps the keys itself (the fleet database) checks there, in
        one statement, and says only the outcome; else the key is opened here.
        """
        answer = answer.strip()
        if not answer:
            return CodeCheck(False, CodeOutcome.NO_CODE)
        recovery = None
        if consume and len(answer) > self.totp.digits and rec.totp_secret is not None:
            recovery = self.box.recovery_hash(rec.name, answer)
        in_store = getattr(self.store, "verify_code", None)
        if in_store is not None:
            said = in_store(rec.name, self.totp.canonical(answer), recovery, self.now(),
                            consume, reset_failures)
            if said is not None:   # None: a break-glass copy, checked here
                outcome = CodeOutcome(said[0])
                return CodeCheck(outcome in (CodeOutcome.TOTP, CodeOutcome.RECOVERY),
                                 outcome, said[1])
        step = self.totp.match(self.active_secret(rec), answer, self.now())
        if step is not None:
            if not consume:
                return CodeCheck(True, CodeOutcome.TOTP, step)
            # A step the record already shows as used is a replay: last_step only
            # grows, so refusing needs no statement (had an MFA reset lowered it
            # since the read, refusing the old secret's code is the safe answer).
            if step <= rec.last_step:
                return CodeCheck(False, CodeOutcome.REPLAY, step)
            if self.store.accept_step(rec.name, step, reset_failures):
                return CodeCheck(True, CodeOutcome.TOTP, step)
            return CodeCheck(False, CodeOutcome.REPLAY, step)
        if recovery is not None and self.store.use_recovery_code(rec.name, recovery,
                                                                 self.now()):
            return CodeCheck(True, CodeOutcome.RECOVERY)
        return CodeCheck(False, CodeOutcome.WRONG_CODE)

    def recovery_codes(self) -> list[str]:
        """A fresh set (config recovery_codes, maybe none), not stored yet."""
        return new_recovery_codes(self.config.recovery_codes)

    def activate(self, name: str, secret: Secret, step: int | None,
                 codes: list[str] | None = None, *, pending: bytes | None = None) -> list[str]:
        """mfa_lifecycle.activate (the unit-test harness calls it here)."""
        return mfa_lifecycle.activate(self, name, secret, step, codes, pending=pending)

    def forget_pending(self, name: str) -> None:
        """The enrollment key kept in this process is confirmed (or withdrawn)."""
        self._pending.pop(name, None)

    def stored_key(self, name: str, secret: Secret) -> bytes | None:
        """What the record's totp_secret holds: the key sealed with the key file, or,
        where the store keeps the keys itself, the id it gave the key."""
        put = getattr(self.store, "put_key", None)
        if put is None:
            return self.box.seal(secret, name, TOTP_PURPOSE)
        kid: bytes | None = put(name, decode_key(secret))
        return kid

    def replace_recovery_codes(self, name: str, codes: list[str]) -> None:
        self.store.replace_recovery_codes(name, [self.box.recovery_hash(name, c) for c in codes])

    def start_enrollment(self, name: str, days: int | None) -> None:
        """mfa_lifecycle.reset (the unit-test harness calls it here)."""
        mfa_lifecycle.reset(self, name, days)

    @staticmethod
    def recovery_text(codes: list[str]) -> str:
        if not codes:
            return ""  # recovery_codes: 0
        lines = "\n".join(f"  {c}" for c in codes)
        return ("Recovery codes — each works once instead of a verification code. "
                "Store them safely now; they will not be shown again:\n" + lines + "\n")
