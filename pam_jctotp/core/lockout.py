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

Unknown names get the same rule from `VirtualCounters`, bounded, with the
default limit, so five wrong passwords lock a name that does not exist exactly
as they lock one that does. Its rows live in a `NameTable` (core/name_table.py,
which never forgets a live lock): this process's memory by default, or one
SQLite file all the daemon's processes share (store/unknown_names.py), so N
processes still lock a name at the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import Config
from ..model import UserRecord
from .name_table import (COUNTING, FRESH, LOCKED, CounterRow, MemoryNames, NameRows, NameTable,
                         Weigh)

if TYPE_CHECKING:  # accounts.py holds a VirtualCounters: no import cycle at run time
    from .accounts import Accounts

LOCK_REASON = "too many attempts"


@dataclass
class Attempt:
    name: str
    limit: int
    count: int = 0   # its number in the window (the reservation's answer)
    settled: bool = field(default=False, compare=False)  # succeeded, failed or released


def begin(acc: Accounts, rec: UserRecord) -> Attempt | None:
    """Reserve one attempt; None when the account is (now) locked."""
    now, cfg = acc.lock_now(), acc.config
    # `rec` was read by this conversation (before its prompts): without a lock
    # then, none can be past unlock_after now, so the write is skipped on the
    # common path. A lock made since is refused by the reservation (fail closed).
    if rec.locked_at is not None and acc.store.expire_lock(rec.name, now, cfg.unlock_after):
        acc.markers.mark(rec.name, False)
        acc.audit("unlocked", rec.name, reason="unlock_after elapsed")
    attempt = Attempt(rec.name, acc.limit(rec))
    count = acc.store.reserve_attempt(rec.name, now, cfg.fail_interval, attempt.limit)
    if count is None:
        _lock_if_exhausted(acc, attempt)
        return None
    attempt.count = count
    return attempt


def succeeded(acc: Accounts, attempt: Attempt, counter_reset: bool = False) -> None:
    """The login succeeded; `counter_reset`: the accepting statement reset it already."""
    attempt.settled = True
    if not counter_reset:
        acc.store.reset_failures(attempt.name)


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
        acc.store.release_attempt(attempt.name)


def unlock(acc: Accounts, name: str) -> None:
    """An admin's unlock: keeps the password and the authenticator."""
    acc.store.unlock(name)
    acc.markers.mark(name, False)


def _lock_if_exhausted(acc: Accounts, attempt: Attempt) -> bool:
    if not acc.store.lock_if_exhausted(attempt.name, acc.lock_now(), attempt.limit,
                                       LOCK_REASON):
        return False
    acc.markers.mark(attempt.name, True)
    acc.audit("locked", attempt.name, reason=f"{attempt.limit} failed attempts")
    return True


class VirtualCounters:
    """Failure counters of names the directory does not know (issue 9 item 8).

    The store's rules (window, limit, lock, unlock_after) over a `NameTable`:
    each call is one transaction of it, so threads, and with a shared table the
    daemon's processes (pam_processes), count one name together. Per-process
    tables would give an unknown name up to N x max_attempts tries before it
    shows "locked", where a real name locks at max_attempts: an oracle.
    """

    def __init__(self, table: NameTable | None = None) -> None:
        self.table: NameTable = table if table is not None else MemoryNames()

    def record(self, name: str, now: float, config: Config) -> UserRecord:
        """A record to ask policy.is_locked / locked_until about (an expired lock lifted)."""
        with self.table.transaction(_weigh(now, config)) as rows:
            row = _current(rows, name, now, config)
            rows.put(name, row)
        return UserRecord(name=name, is_admin=False, password_hash=None, mfa_required=False,
                          enroll_deadline=None, totp_secret=None, pending_secret=None,
                          last_step=-1, failed_count=row.failed_count,
                          fail_window_start=row.fail_window_start, locked_at=row.locked_at,
                          lock_reason=LOCK_REASON if row.locked_at is not None else None,
                          max_attempts=None, created_at=0.0, enrolled_at=None)

    def reserve(self, name: str, now: float, config: Config) -> bool:
        """reserve_attempt: False when locked or the window's limit is used up."""
        with self.table.transaction(_weigh(now, config)) as rows:
            row = _current(rows, name, now, config)
            count, start, locked = row
            reserved = True
            if locked is not None:
                reserved = False
            elif start is None or start <= now - config.fail_interval:
                row = CounterRow(1, now, None)
            elif count >= config.max_attempts:
                reserved = False
            else:
                row = row._replace(failed_count=count + 1)
            rows.put(name, row)
            return reserved

    def failed(self, name: str, now: float, config: Config) -> bool:
        """lock_if_exhausted: True when this failure locked the name."""
        with self.table.transaction(_weigh(now, config)) as rows:
            row = _current(rows, name, now, config)
            locks = row.locked_at is None and row.failed_count >= config.max_attempts
            if locks:
                row = row._replace(locked_at=now)
            rows.put(name, row)
            return locks


def _current(rows: NameRows, name: str, now: float, config: Config) -> CounterRow:
    """The name's row, a lock past unlock_after lifted (expire_lock)."""
    row = rows.get(name) or CounterRow()
    if row.locked_at is not None and _lock_expired(row.locked_at, now, config):
        return CounterRow()
    return row


def _lock_expired(locked_at: float, now: float, config: Config) -> bool:
    return 0 < config.unlock_after and locked_at <= now - config.unlock_after


def _weigh(now: float, config: Config) -> Weigh:
    """What dropping a row would forget, now (core/name_table.py)."""
    def weigh(row: CounterRow) -> int:
        if row.locked_at is not None:
            return FRESH if _lock_expired(row.locked_at, now, config) else LOCKED
        start = row.fail_window_start
        if row.failed_count and start is not None and start > now - config.fail_interval:
            return COUNTING
        return FRESH
    return weigh
