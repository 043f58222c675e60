"""Users, lockout, the replay guard and recovery codes (part of store/postgres/):
each change ONE statement, its condition in the WHERE clause."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from psycopg import errors as pgerrors

from ...errors import StoreError
from ...model import UserRecord
from .. import SELECT_USERS as _SELECT
from .. import USER_COLUMNS
from .. import record as _record
from .pool import Connections

# The statements of a login's path, named: bench/pg_async_vs_threads.py runs the same
# text on psycopg's event-loop API. Each is ONE statement, its condition in WHERE.
GET_USER = f"{_SELECT} WHERE name = %s"
RESERVE_ATTEMPT = """
    UPDATE users SET
      failed_count = CASE WHEN fail_window_start IS NULL
                            OR fail_window_start <= %(start)s
                          THEN 1 ELSE failed_count + 1 END,
      fail_window_start = CASE WHEN fail_window_start IS NULL
                                 OR fail_window_start <= %(start)s
                               THEN %(now)s ELSE fail_window_start END
    WHERE name = %(name)s AND locked_at IS NULL
      AND (fail_window_start IS NULL OR fail_window_start <= %(start)s
           OR failed_count < %(limit)s)
    RETURNING failed_count
    """
ACCEPT_STEP = "UPDATE users SET last_step = %s WHERE name = %s AND last_step < %s"
ACCEPT_STEP_AND_RESET = ("UPDATE users SET last_step = %s, failed_count = 0, "
                         "fail_window_start = NULL WHERE name = %s AND last_step < %s")
RESET_FAILURES = ("UPDATE users SET failed_count = 0, fail_window_start = NULL WHERE name = %s "
                  "AND (failed_count <> 0 OR fail_window_start IS NOT NULL)")


class Users(Connections):
    """The user rows and their recovery codes, on Connections."""

    def get(self, name: str) -> UserRecord | None:
        row = self._one(GET_USER, (name,))
        return _record(row) if row else None

    def list(self) -> list[UserRecord]:
        return [_record(r) for r in self._all(f"{_SELECT} ORDER BY name")]

    def add(self, name: str, *, is_admin: bool, password_hash: str | None, now: float) -> None:
        try:
            self._rowcount("INSERT INTO users (name, is_admin, password_hash, created_at) "
                           "VALUES (%s, %s, %s, %s)", (name, int(is_admin), password_hash, now))
        except pgerrors.UniqueViolation:
            raise StoreError(f"user {name!r} already exists") from None

    def delete(self, name: str) -> bool:
        return self._rowcount("DELETE FROM users WHERE name = %s", (name,)) == 1

    def update(self, name: str, **values: Any) -> bool:
        """Set plain columns of one user (admin/self-service edits), in one statement."""
        bad = set(values) - set(USER_COLUMNS) - {"name"}
        if bad or not values:
            raise ValueError(f"bad columns {bad}")
        assignments = ", ".join(f"{k} = %({k})s" for k in values)
        params = {k: (int(v) if isinstance(v, bool) else v) for k, v in values.items()}
        return self._rowcount(f"UPDATE users SET {assignments} WHERE name = %(_name)s",
                              {**params, "_name": name}) == 1

    # --- lockout: single statements, no read-modify-write -----------------------------

    def expire_lock(self, name: str, now: float, unlock_after: int) -> bool:
        return self._rowcount(
            "UPDATE users SET locked_at = NULL, lock_reason = NULL, failed_count = 0, "
            "fail_window_start = NULL WHERE name = %s AND locked_at IS NOT NULL "
            "AND %s > 0 AND locked_at <= %s",
            (name, unlock_after, now - unlock_after)) == 1

    def reserve_attempt(self, name: str, now: float, interval: int, limit: int) -> int | None:
        """Count one attempt BEFORE the factors are checked (see sqlite.py)."""
        row = self._one(RESERVE_ATTEMPT, {"name": name, "now": float(now),
                                          "start": float(now - interval), "limit": limit})
        return int(row[0]) if row else None

    def release_attempt(self, name: str) -> None:
        """Give back one reserved attempt (a conversation abandoned before any wrong factor)."""
        self._rowcount("UPDATE users SET failed_count = failed_count - 1 "
                       "WHERE name = %s AND failed_count > 0 AND locked_at IS NULL", (name,))

    def lock_if_exhausted(self, name: str, now: float, limit: int, reason: str) -> bool:
        return self._rowcount(
            "UPDATE users SET locked_at = %s, lock_reason = %s "
            "WHERE name = %s AND locked_at IS NULL AND failed_count >= %s",
            (now, reason, name, limit)) == 1

    def reset_failures(self, name: str) -> None:
        self._rowcount(RESET_FAILURES, (name,))

    def unlock(self, name: str) -> bool:
        return self._rowcount(
            "UPDATE users SET locked_at = NULL, lock_reason = NULL, failed_count = 0, "
            "fail_window_start = NULL WHERE name = %s", (name,)) == 1

    # --- TOTP replay guard ---------------------------------------------------------------

    def accept_step(self, name: str, step: int, reset_failures: bool = False) -> bool:
        return self._rowcount(ACCEPT_STEP_AND_RESET if reset_failures else ACCEPT_STEP,
                              (step, name, step)) == 1

    # --- recovery codes --------------------------------------------------------------

    def replace_recovery_codes(self, name: str, hashes: Iterable[str]) -> None:
        rows = [(name, h) for h in hashes]
        with self.unit_of_work():
            self._rowcount('DELETE FROM recovery_codes WHERE "user" = %s', (name,))
            if rows:
                self._run(lambda c: c.cursor().executemany(
                    'INSERT INTO recovery_codes ("user", code_hash) VALUES (%s, %s)', rows))

    def use_recovery_code(self, name: str, code_hash: str, now: float) -> bool:
        return self._rowcount('UPDATE recovery_codes SET used_at = %s WHERE "user" = %s '
                              "AND code_hash = %s AND used_at IS NULL",
                              (now, name, code_hash)) == 1

    def recovery_codes_left(self, name: str) -> int:
        row = self._one('SELECT count(*) FROM recovery_codes WHERE "user" = %s '
                        "AND used_at IS NULL", (name,))
        return int(row[0]) if row else 0

    def clear_recovery_codes(self, name: str) -> None:
        self._rowcount('DELETE FROM recovery_codes WHERE "user" = %s', (name,))
