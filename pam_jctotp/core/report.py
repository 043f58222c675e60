"""What `user show`, `user list` and `status` report: one pure read per user.

No secrets, no hashes; locks and failure counts through policy.is_locked and
policy.failures, so every report agrees with what the next login would do,
and reading never writes. The store holds everything but the groups, so an
admin's report (`user list`, `user show`) still prints while the directory
is down: groups then come from NSS alone, and the report warns once.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import DirectoryUnavailable
from ..model import MfaState, UserRecord
from . import policy
from .accounts import Accounts
from .steps import Error


def iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class ReportGroups:
    """Users' groups for an admin's report. The first directory outage of the report
    is remembered and the rest of it asks NSS only (a wedged server costs one
    timeout, not one per user); admin and attempt limits may then be understated."""

    def __init__(self, acc: Accounts) -> None:
        self.acc = acc
        self.unavailable: str | None = None

    def of(self, name: str) -> frozenset[str]:
        if self.unavailable is None:
            try:
                return self.acc.groups_of(name)
            except DirectoryUnavailable as exc:
                self.unavailable = str(exc)
        return self.acc.system.groups_of(name)

    def warning(self) -> Error | None:
        """What stderr should say when the report did without the directory."""
        if self.unavailable is None:
            return None
        return Error(f"warning: {self.unavailable}: admin and attempts left come from "
                     "local (NSS) groups only")


def password_source(acc: Accounts, rec: UserRecord) -> str:
    """Where this user's password is checked: `has_password` alone says "no" for every
    directory user, whose password the directory keeps."""
    if acc.config.directory.is_ldap:
        return "directory (ldap)"
    return "local" if rec.password_hash is not None else "not set"


def summary(acc: Accounts, rec: UserRecord,
            groups: ReportGroups | None = None) -> dict[str, Any]:
    """`groups`: a report that may do without the directory; without it, an outage
    raises DirectoryUnavailable (a verb that changes something needs the truth)."""
    now, cfg = acc.now(), acc.config
    locks = acc.lock_now()   # a fleet's locks run on the database's clock
    admin = policy.is_admin(rec, groups.of(rec.name) if groups else acc.groups_of(rec.name),
                            cfg)
    limit = policy.attempt_limit(rec, cfg, admin)
    lock_live = policy.is_locked(rec, locks, cfg)
    refusal = policy.refusal(rec, now, cfg, locks)  # a live lock, or an enrollment over
    failed = policy.failures(rec, locks, cfg)
    state = policy.mfa_state(rec, now)
    return {
        "name": rec.name,
        "admin": admin,
        "email": rec.email,
        "mfa": state.value,
        "mfa_required": bool(rec.mfa_required),
        "enrollment_deadline": iso(rec.enroll_deadline) if state in (
            MfaState.PENDING, MfaState.EXPIRED) else None,
        "days_left": acc.days_left(rec) if state is MfaState.PENDING else None,
        "enrolled_at": iso(rec.enrolled_at),
        "recovery_codes_left": acc.store.recovery_codes_left(rec.name),
        "locked": refusal is not None,
        "locked_since": iso(rec.locked_at) if lock_live else (
            iso(rec.enroll_deadline) if refusal else None),
        "lock_reason": refusal,
        "locked_until": iso(policy.locked_until(rec, cfg)) if lock_live else None,
        "failed_attempts": failed,
        "max_attempts": limit,
        "attempts_left": 0 if lock_live else max(0, limit - failed),
        "has_password": rec.password_hash is not None,   # a local hash (kept for scripts)
        "password": password_source(acc, rec),
        "directory": acc.departed.get(rec.name),   # the directory sync's marker
    }
