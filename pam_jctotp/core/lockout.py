"""The one home of the lockout rule, for logins, self-service proofs and `passwd`.

    attempt = begin(acc, rec)     reserve one attempt BEFORE any factor is checked
    if attempt is None:           locked, or the window's limit is used up: check nothing
    ... check the factors ...
    succeeded(acc, attempt)       the counter starts over
    failed(acc, attempt)          lock when the window's count reached the limit

Each store call is ONE statement, so N parallel guesses are counted N times
and never get more than `limit` checks. Reads never lift a lock (policy.is_locked
decides what a read shows); a lock past `unlock_after` is lifted here, on the
write path, just before the reservation.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import UserRecord
from .accounts import Accounts

LOCK_REASON = "too many attempts"


@dataclass(frozen=True)
class Attempt:
    name: str
    limit: int


def begin(acc: Accounts, rec: UserRecord) -> Attempt | None:
    """Reserve one attempt; None when the account is (now) locked."""
    now, cfg = acc.now(), acc.config
    if acc.store.expire_lock(rec.name, now, cfg.unlock_after):
        acc.markers.mark(rec.name, False)
        acc.audit("unlocked", rec.name, reason="unlock_after elapsed")
    attempt = Attempt(rec.name, acc.limit(rec))
    if acc.store.reserve_attempt(rec.name, now, cfg.fail_interval, attempt.limit) is None:
        _lock_if_exhausted(acc, attempt)
        return None
    return attempt


def succeeded(acc: Accounts, attempt: Attempt) -> None:
    acc.store.reset_failures(attempt.name)


def failed(acc: Accounts, attempt: Attempt) -> bool:
    """A wrong factor; True when this attempt locked the account."""
    return _lock_if_exhausted(acc, attempt)


def unlock(acc: Accounts, name: str) -> None:
    """An admin's unlock: keeps the password and the authenticator."""
    acc.store.unlock(name)
    acc.markers.mark(name, False)


def _lock_if_exhausted(acc: Accounts, attempt: Attempt) -> bool:
    if not acc.store.lock_if_exhausted(attempt.name, acc.now(), attempt.limit, LOCK_REASON):
        return False
    acc.markers.mark(attempt.name, True)
    acc.audit("locked", attempt.name, reason=f"{attempt.limit} failed attempts")
    return True
