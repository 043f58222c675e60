"""The failure counters of names nobody has: the store's lockout subset, in Python.

An unknown name must lock exactly as a real one (issue 9 item 8): after
max_attempts wrong passwords both say "locked", at the same attempt, and lift
the same. So it goes through the same core/lockout.py `begin`/`failed` as a
real user's row, against `UnknownNames` instead of the store: the same
`Lockout` methods (store/__init__.py) with the same meaning as the SQL of
sqlite.py and postgres.py, and tests/unit/test_store_contract.py runs the
lockout contract on all three.

Its rows live in a `NameTable` (core/name_table.py), bounded, never forgetting
a live lock: this process's memory by default, or with `pam_processes: N` one
SQLite file every process of the host shares (sqlite_names.py), so N processes
still lock a name at the limit. Each method is one transaction of the table.

What the table may forget depends on the rule's fail_interval and unlock_after;
the calls that carry them (reserve_attempt, expire_lock) keep the last values.
Until expire_lock has said otherwise, no lock counts as expired (unlock_after 0):
a lock is kept too long, never forgotten too early.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.name_table import COUNTING, FRESH, LOCKED, CounterRow, MemoryNames, NameTable, Weigh
from ..core.policy import LOCK_REASON
from ..model import UserRecord

DEFAULT_INTERVAL = 900   # config.py's fail_interval, until reserve_attempt says


class UnknownNames:
    """The `Lockout` subset of the store for names the directory does not know."""

    def __init__(self, table: NameTable | None = None) -> None:
        self.table: NameTable = table if table is not None else MemoryNames()
        self.interval = DEFAULT_INTERVAL
        self.unlock_after = 0

    def get(self, name: str) -> UserRecord:
        """The name's counter as a record of the default state (never None: every
        name has one, at zero). A read: a lock past unlock_after is still shown
        (policy.is_locked decides what it means), as the store's reads do."""
        with self.table.transaction(self._weigh()) as rows:
            row = rows.get(name) or CounterRow()
        return UserRecord(name=name, is_admin=False, password_hash=None, mfa_required=False,
                          enroll_deadline=None, totp_secret=None, pending_secret=None,
                          last_step=-1, failed_count=row.failed_count,
                          fail_window_start=row.fail_window_start, locked_at=row.locked_at,
                          lock_reason=LOCK_REASON if row.locked_at is not None else None,
                          max_attempts=None, created_at=0.0, enrolled_at=None)

    def expire_lock(self, name: str, now: float, unlock_after: int) -> bool:
        """Lift a lock older than unlock_after (0: never by time); the name is seen now."""
        self.unlock_after = unlock_after
        with self.table.transaction(self._weigh(now)) as rows:
            row = rows.get(name) or CounterRow()
            expired = row.locked_at is not None and self._expired(row.locked_at, now)
            rows.put(name, CounterRow() if expired else row)
            return expired

    def reserve_attempt(self, name: str, now: float, interval: int, limit: int) -> int | None:
        """The attempt's number in its window; None when locked or the limit is used up."""
        self.interval = interval
        with self.table.transaction(self._weigh(now)) as rows:
            count, start, locked = rows.get(name) or CounterRow()
            if locked is not None:
                rows.put(name, CounterRow(count, start, locked))  # seen now
                return None
            if start is None or start <= now - interval:
                count, start = 1, now
            elif count >= limit:
                rows.put(name, CounterRow(count, start, None))  # seen now
                return None
            else:
                count += 1
            rows.put(name, CounterRow(count, start, None))
            return count

    def release_attempt(self, name: str) -> None:
        self._change(name, lambda r: r._replace(failed_count=r.failed_count - 1)
                     if r.failed_count > 0 and r.locked_at is None else r)

    def lock_if_exhausted(self, name: str, now: float, limit: int, reason: str) -> bool:
        # `reason` is always LOCK_REASON here: a row has no column for it.
        return self._change(name, lambda r: r._replace(locked_at=now)
                            if r.locked_at is None and r.failed_count >= limit else r, now)

    def reset_failures(self, name: str) -> None:
        self._change(name, lambda r: r._replace(failed_count=0, fail_window_start=None))

    def unlock(self, name: str) -> bool:
        return self._change(name, lambda r: CounterRow())

    def _change(self, name: str, new: Callable[[CounterRow], CounterRow],
                now: float | None = None) -> bool:
        """One transaction: the row through `new`; True when it changed."""
        with self.table.transaction(self._weigh(now)) as rows:
            row = rows.get(name)
            if row is None:
                return False
            changed = new(row)
            rows.put(name, changed)
            return bool(changed != row)

    def _expired(self, locked_at: float, now: float) -> bool:
        return self.unlock_after > 0 and locked_at <= now - self.unlock_after

    def _weigh(self, now: float | None = None) -> Weigh:
        """What dropping a row would forget, now (core/name_table.py); without a
        time (release, reset, unlock), every lock weighs as live."""
        def weigh(row: CounterRow) -> int:
            if row.locked_at is not None:
                live = now is None or not self._expired(row.locked_at, now)
                return LOCKED if live else FRESH
            start = row.fail_window_start
            if row.failed_count and start is not None and (
                    now is None or start > now - self.interval):
                return COUNTING
            return FRESH
        return weigh
