"""What `user show`, `user list` and `status` report: one pure read per user.

No secrets, no hashes; locks and failure counts through policy.is_locked and
policy.failures, so every report agrees with what the next login would do,
and reading never writes.
"""

from __future__ import annotations

import time
from typing import Any

from ..model import MfaState, UserRecord
from . import policy
from .accounts import Accounts


def iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def summary(acc: Accounts, rec: UserRecord) -> dict[str, Any]:
    now, cfg = acc.now(), acc.config
    limit = acc.limit(rec)
    lock_live = policy.is_locked(rec, now, cfg)
    refusal = policy.refusal(rec, now, cfg)  # a live lock, or an enrollment that expired
    failed = policy.failures(rec, now, cfg)
    state = policy.mfa_state(rec, now)
    return {
        "name": rec.name,
        "admin": acc.is_admin(rec),
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
        "has_password": rec.password_hash is not None,
    }
