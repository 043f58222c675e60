"""The rules, as pure functions: MFA state, attempt limits, exemptions.

Nothing here does I/O; the caller passes in what it looked up.
"""

from __future__ import annotations

import ipaddress
import math
from enum import Enum

from .config import Config
from .store import UserRecord

ADMIN_ATTEMPT_CAP = 5  # admin accounts never get more guesses than this
DAY = 86400.0


class MfaState(str, Enum):
    OFF = "off"                  # not required, not enrolled: password only
    PENDING = "pending"          # required, inside the enrollment period
    EXPIRED = "expired"          # required, period over, never enrolled
    ACTIVE = "active"            # enrolled


def mfa_state(rec: UserRecord, now: float) -> MfaState:
    if rec.totp_secret is not None:
        return MfaState.ACTIVE
    if not rec.mfa_required:
        return MfaState.OFF
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
    return rec.is_admin or bool(groups & set(config.admin_groups))


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


def locked_until(rec: UserRecord, config: Config) -> float | None:
    """When a lock lifts by itself; None = until an admin unlocks."""
    if rec.locked_at is None or config.unlock_after == 0:
        return None
    return rec.locked_at + config.unlock_after
