"""The one home of the lockout rule, for logins, self-service proofs and `passwd`.

    attempt = begin(acc, rec)     reserve one attempt BEFORE any factor is checked
    if attempt is None:           locked, or the window's limit is used up: check nothing
    ... check the factors ...
    succeeded(acc, attempt)       the counter starts over (or already did: a right TOTP
                                  code resets it with its step, one statement)
    failed(acc, attempt)          the attempt that reserved the window's last slot
                                  locks (below it no lock can be due: no statement)
    release(acc, attempt)         the conversation was abandoned before a wrong
                                  factor: the reservation is given back (counts nothing)

Each store call is ONE statement, so N parallel guesses are counted N times
and never get more than `limit` checks. Reads never lift a lock (policy.is_locked
decides what a read shows); a lock past `unlock_after` is lifted here, on the
write path, just before the reservation.

Unknown names go through the same calls, against `acc.unknown` (the store's
lockout subset for names nobody has, store/unknown_names.py) instead of the
store, with the default limit: five wrong passwords lock a name that does not
exist exactly as they lock one that does. Their locks are neither marked for
failmode=open nor audited (remote clients choose the names).

`unlock` audits its own "unlocked" event: every unlock is audited once, here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..model import UserRecord
from ..store import Lockout
from .policy import LOCK_REASON

if TYPE_CHECKING:  # accounts.py imports this module: no import cycle at run time
    from .accounts import Accounts

__all__ = ["LOCK_REASON", "Attempt", "begin", "succeeded", "failed", "release", "unlock"]


@dataclass
class Attempt:
    name: str
    limit: int
    store: Lockout = field(compare=False)   # acc.store, or acc.unknown for a name nobody has
    real: bool = True   # a user's row: its locks are marked and audited
    count: int = 0   # its number in the window (the reservation's answer)
    settled: bool = field(default=False, compare=False)  # succeeded, failed or released


def begin(acc: Accounts, rec: UserRecord, unknown: bool = False) -> Attempt | None:
    """Reserve one attempt; None when the account is (now) locked. `unknown`: `rec`
    is acc.unknown's record of a name nobody has (the default limit)."""
    now, cfg = acc.lock_now(), acc.config
    store: Lockout = acc.unknown if unknown else acc.store
    # `rec` was read by this conversation (before its prompts): without a lock
    # then, none can be past unlock_after now, so the write is skipped on the
    # common path. A lock made since is refused by the reservation (fail closed).
    if rec.locked_at is not None and store.expire_lock(rec.name, now, cfg.unlock_after) \
            and not unknown:
        acc.markers.mark(rec.name, False)
        acc.audit("unlocked", rec.name, reason="unlock_after elapsed")
    attempt = Attempt(rec.name, cfg.max_attempts if unknown else acc.limit(rec), store,
                      real=not unknown)
    count = store.reserve_attempt(rec.name, now, cfg.fail_interval, attempt.limit)
    if count is None:
        _lock_if_exhausted(acc, attempt)
        return None
    attempt.count = count
    return attempt


def succeeded(acc: Accounts, attempt: Attempt, counter_reset: bool = False) -> None:
    """The login succeeded; `counter_reset`: the accepting statement reset it already."""
    attempt.settled = True
    if not counter_reset:
        attempt.store.reset_failures(attempt.name)


def failed(acc: Accounts, attempt: Attempt) -> bool:
    """A wrong factor; True when this attempt locked the account.

    Only the attempt that reserved the window's last slot can find the limit
    reached by failures: attempts below it are followed by that one, which
    locks if it fails too (a later success or release leaves fewer failures
    than the limit, so no lock is due). The reservation bounds the checks."""
    attempt.settled = True
    if attempt.count < attempt.limit:
        return False
    return _lock_if_exhausted(acc, attempt)


def release(acc: Accounts, attempt: Attempt) -> None:
    """Give back an attempt no wrong factor was found in (the client left half-way)."""
    if not attempt.settled:
        attempt.settled = True
        attempt.store.release_attempt(attempt.name)


def unlock(acc: Accounts, name: str, actor: str, **why: object) -> None:
    """An admin's unlock: keeps the password and the authenticator; audited here."""
    acc.store.unlock(name)
    acc.markers.mark(name, False)
    acc.audit("unlocked", name, actor=actor, **why)


def _lock_if_exhausted(acc: Accounts, attempt: Attempt) -> bool:
    if not attempt.store.lock_if_exhausted(attempt.name, acc.lock_now(), attempt.limit,
                                           LOCK_REASON):
        return False
    if not attempt.real:
        return True
    acc.markers.mark(attempt.name, True)
    acc.audit("locked", attempt.name, reason=f"{attempt.limit} failed attempts")
    return True
