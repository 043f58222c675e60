"""The rules, as pure functions: MFA state, locks, attempt limits, exemptions, names.

Nothing here does I/O; the caller passes in what it looked up. Every read of
"is this account locked" and "how many failures count" goes through here, so
`user show`, `user list`, `status`, a login and acct_mgmt always agree.
"""

from __future__ import annotations

import ipaddress
import math
import re

from ..config import Config
from ..errors import UsageError
from ..model import MfaState, UserRecord

ADMIN_ATTEMPT_CAP = 5  # admin accounts never get more guesses than this
LOCK_REASON = "too many attempts"  # the lock core/lockout.py makes
DAY = 86400.0
# POSIX-portable user names, as useradd accepts by default (used with fullmatch:
# `$` would let a trailing newline through).
NAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}\$?")
# An address's shape only (no mail is sent): printable ASCII, one '@', a dot in the
# domain; no ':' (the otpauth label's issuer separator), at most 100 characters so
# the enrollment QR code stays within one frame (as config's account_name does).
EMAIL_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
EMAIL_MAX = 100
ENROLLMENT_EXPIRED = "enrollment expired"


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise UsageError(f"invalid user name {name!r}: use lower-case letters, digits, "
                         "'_' and '-', starting with a letter or '_' (at most 32)")
    return name


def check_email(value: object) -> str:
    if not isinstance(value, str) or len(value) > EMAIL_MAX or not EMAIL_RE.fullmatch(value):
        raise UsageError(f"invalid e-mail address {value!r}: use name@example.org "
                         f"(ASCII, at most {EMAIL_MAX} characters)")
    return value


def mfa_state(rec: UserRecord, now: float) -> MfaState:
    if rec.totp_secret is not None:
        return MfaState.ACTIVE
    if not rec.mfa_required:
        return MfaState.OFF
    if rec.enroll_now:
        return MfaState.ENROLL_NOW
    if rec.enroll_deadline is not None and rec.enroll_deadline > now:
        return MfaState.PENDING
    return MfaState.EXPIRED


def days_left(deadline: float | None, now: float) -> int:
    """Whole days until the deadline, rounded up (1 while any time is left)."""
    if deadline is None or deadline <= now:
        return 0
    return max(1, math.ceil((deadline - now) / DAY))


def attempt_limit(rec: UserRecord, config: Config, admin: bool) -> int:
    limit = rec.max_attempts if rec.max_attempts is not None else config.max_attempts
    return min(limit, ADMIN_ATTEMPT_CAP) if admin else limit


def is_admin(rec: UserRecord, groups: frozenset[str], config: Config) -> bool:
    return bool(rec.is_admin) or bool(groups & set(config.admin_groups))


def exemption(groups: frozenset[str], rhost: str, config: Config) -> str | None:
    """Why this login may skip the code (never the password), or None."""
    hit = groups & set(config.exempt_groups)
    if hit:
        return f"group {sorted(hit)[0]}"
    if rhost and config.exempt_sources:
        try:
            addr = ipaddress.ip_address(rhost.split("%", 1)[0])
        except ValueError:
            return None  # a host name, not an address: never exempt
        for net in config.exempt_networks:
            if addr.version == net.version and addr in net:
                return f"source {net}"
    return None


# --- locks and the failure window ---------------------------------------------------
# The store's reserve_attempt/expire_lock statements apply the same two rules in
# SQL (a window older than fail_interval starts over; a lock older than
# unlock_after is lifted); the Store contract tests hold the two in step. Their
# `now` is Accounts.lock_now(): in a fleet the database's clock, not the host's.

def locked_until(rec: UserRecord, config: Config) -> float | None:
    """When a lock lifts by itself; None = until an admin unlocks."""
    if rec.locked_at is None or config.unlock_after == 0:
        return None
    return rec.locked_at + config.unlock_after


def is_locked(rec: UserRecord, now: float, config: Config) -> bool:
    """Is the account locked at `now`? A lock past unlock_after counts as lifted,
    whether or not a write path has cleared it in the store yet."""
    if rec.locked_at is None:
        return False
    until = locked_until(rec, config)
    return until is None or now < until


def refusal(rec: UserRecord, now: float, config: Config,
            lock_now: float | None = None) -> str | None:
    """Why every login of this account is refused until an admin acts (or a lock
    runs out): the lock's reason, or an enrollment period that ended. What
    `user show`, `user list` and `status` report as "locked". `lock_now`: the
    clock locks run on, when not `now` (a fleet's: the database's)."""
    if is_locked(rec, now if lock_now is None else lock_now, config):
        return rec.lock_reason or "locked"
    if mfa_state(rec, now) is MfaState.EXPIRED:
        return ENROLLMENT_EXPIRED
    return None


def lock_expired(rec: UserRecord, now: float, config: Config) -> bool:
    """A stored lock that has run out (the next write path lifts it)."""
    return rec.locked_at is not None and not is_locked(rec, now, config)


def failures(rec: UserRecord, now: float, config: Config) -> int:
    """Failed attempts that count now: those of an open window, none after an expired lock."""
    if lock_expired(rec, now, config):
        return 0  # lifting the lock resets the counter
    if rec.fail_window_start is None or rec.fail_window_start <= now - config.fail_interval:
        return 0
    return rec.failed_count
