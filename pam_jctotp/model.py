"""The records and enums every layer shares: no I/O, no behaviour beyond properties.

Wire codecs, the core, the store and the CLI all speak these, so this module
imports nothing of the package but `secret`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum, StrEnum

from .secret import Secret


@dataclass(frozen=True)
class UserRecord:
    """One row of the directory's user table, as the store returns it."""

    name: str
    is_admin: bool
    password_hash: str | None
    mfa_required: bool
    enroll_deadline: float | None
    totp_secret: bytes | None
    pending_secret: bytes | None
    last_step: int
    failed_count: int
    fail_window_start: float | None
    locked_at: float | None
    lock_reason: str | None
    max_attempts: int | None
    created_at: float
    enrolled_at: float | None
    email: str | None = None      # for account_name's {email} (no mail is ever sent)
    enroll_now: bool = False      # required with no enrollment period: the next login enrolls

    def __repr__(self) -> str:  # never print hashes or ciphertexts
        return f"UserRecord(name={self.name!r}, admin={self.is_admin})"


class MfaState(str, Enum):  # noqa: UP042 - StrEnum would change str() and f"{state}"
    OFF = "off"                  # not required, not enrolled: password only
    PENDING = "pending"          # required, inside the enrollment period
    ENROLL_NOW = "enroll_now"    # required, no period: the next login must enroll (no skip)
    EXPIRED = "expired"          # required, period over, never enrolled
    ACTIVE = "active"            # enrolled


class VerdictCode(StrEnum):
    """PAM verdicts, spelled as on the wire (docs/protocol.md)."""

    SUCCESS = "SUCCESS"
    AUTH_ERR = "AUTH_ERR"
    USER_UNKNOWN = "USER_UNKNOWN"
    MAXTRIES = "MAXTRIES"
    ACCT_EXPIRED = "ACCT_EXPIRED"
    PERM_DENIED = "PERM_DENIED"
    IGNORE = "IGNORE"
    AUTHINFO_UNAVAIL = "AUTHINFO_UNAVAIL"


class CodeOutcome(StrEnum):
    """What checking a typed code found (spelled as in the audit's `reason`/`how`)."""

    TOTP = "totp"                # a right TOTP code, its step now used
    RECOVERY = "recovery"        # a recovery code, now spent
    WRONG_CODE = "wrong_code"
    REPLAY = "replay"            # a right code of a step already used
    NO_CODE = "no_code"          # nothing typed
    THROTTLED = "throttled"      # the fleet database's own guess ceiling: no check


class Refusal(StrEnum):
    """Why a login or an account check was refused (the audit's `reason` of
    login_fail and acct_refused; a code's own failure is a CodeOutcome)."""

    WRONG_PASSWORD = "wrong_password"
    LOCKED = "locked"
    UNKNOWN_USER = "unknown_user"
    NOT_IN_DIRECTORY = "not_in_directory"
    ENROLLMENT_EXPIRED = "enrollment_expired"
    ENROLLMENT_REQUIRED = "enrollment_required"
    MFA_REQUIRED_FOR_ALL = "mfa_required_for_all"
    WRONG_ENROLLMENT_CODE = "wrong_enrollment_code"
    ENROLLMENT_KEY_WITHDRAWN = "enrollment_key_withdrawn"
    DATABASE_UNAVAILABLE = "database_unavailable"   # failed closed for an outage


class LoginHow(StrEnum):
    """How a successful login got through (the audit's `how`)."""

    TOTP = "totp"
    RECOVERY = "recovery"
    ENROLLED = "enrolled"
    ENROLLMENT_SKIPPED = "enrollment_skipped"
    PASSWORD_ONLY = "password_only"   # MFA off, the password checked here
    NO_MFA = "no_mfa"                 # MFA off and nothing of ours checked (factors=totp)


class ExitCode(IntEnum):
    """Exit codes of `jctotp` (and of control-socket results); documented in its --help."""

    OK = 0
    REFUSED = 1          # wrong code or password, already enrolled, ...: nothing changed
    USAGE = 2            # bad arguments, out-of-range values
    NOT_FOUND = 3        # no such user
    PERMISSION = 4       # admin verb as a non-root user
    LOCKED = 5           # account locked
    UNAVAILABLE = 69     # EX_UNAVAILABLE: the daemon cannot be reached
    CONFIG = 78          # EX_CONFIG
    INTERRUPTED = 130    # Ctrl-C


@dataclass(frozen=True)
class LoginRequest:
    """What the shim's HELLO frame says about one PAM call."""

    call: str            # "auth" | "acct" | "passwd_prelim" | "passwd" (pam_sm_chauthtok)
    service: str
    user: str
    rhost: str = ""
    tty: str = ""
    factors: str = "password,totp"
    authtok: Secret | None = None
    timeout: int | None = None   # the shim's timeout= (seconds), when it told us
    acct_hint: bool = False      # the shim skips its account call after a vouched success
    uid: int | None = None       # the invoking process's real uid (getuid()); None: an older shim

    @property
    def password_factor(self) -> bool:
        return self.factors == "password,totp"
