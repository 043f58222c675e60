"""Users, lockout, the replay guard and recovery codes (part of store/postgres/):
each change ONE statement, its condition in the WHERE clause.

Every write is a call of a SECURITY DEFINER function (store/pg_userwrites.py): a host
role (issue 22) may not write the users table itself, and the same functions serve
the schema's owner, so both take one path. The admin verbs that weaken a user are
audited by those functions (from a host role): the events they wrote are noted here,
and FleetAudit does not write them a second time (audited_in_database)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.types.json import Jsonb

from ...errors import PermissionDenied, StoreError
from ...model import UserRecord
from .. import SELECT_USERS as _SELECT
from .. import USER_COLUMNS
from .. import record as _record
from .pool import Connections

# The statements of a login's path, named: bench/pg_async_vs_threads.py runs the same
# text on psycopg's event-loop API. Each is ONE statement, its condition in WHERE.
GET_USER = f"{_SELECT} WHERE name = %s"
RESERVE_ATTEMPT = ("SELECT jctotp_reserve_attempt(%(name)s::text, %(now)s::float8, "
                   "%(start)s::float8, %(limit)s::int)")
ACCEPT_STEP = "SELECT jctotp_accept_step(%s::text, %s::bigint, false)"            # (name, step)
ACCEPT_STEP_AND_RESET = "SELECT jctotp_accept_step(%s::text, %s::bigint, true)"   # (name, step)
RESET_FAILURES = "SELECT jctotp_reset_failures(%s::text)"

ADMIN = "root"    # who runs the admin verbs (core/verbs.py: root, by SO_PEERCRED)
NOTED_FOR = 10.0  # seconds an event audited by the database waits for its FleetAudit twin


def _refusable(query: str, params: Any, conn: psycopg.Connection[Any]) -> Any:
    """One function call; a refusal by the database (a host role's limits) is the
    caller's PermissionDenied, its one line, not a database error."""
    try:
        return conn.execute(query, params).fetchone()
    except pgerrors.InsufficientPrivilege as exc:
        raise PermissionDenied(exc.diag.message_primary or str(exc)) from None


def _json(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()   # bytea's text form (jsonb_populate_record)
    return value


class Users(Connections):
    """The user rows and their recovery codes, on Connections."""

    _noted: dict[tuple[str, str], list[float]]
    _noted_lock: threading.Lock

    def _call(self, query: str, params: Any = ()) -> Any:
        row = self._run(lambda c: _refusable(query, params, c))
        return None if row is None else row[0]

    def _note(self, event: str | None, name: str) -> None:
        if event:
            with self._noted_lock:
                self._noted.setdefault((event, name), []).append(time.monotonic())

    def audited_in_database(self, event: str, user: str | None) -> bool:
        """Did a function of this process write this admin verb's audit row already?
        (once per row it wrote: FleetAudit then writes only the host's file)"""
        if user is None or not self._noted:
            return False
        with self._noted_lock:
            times = self._noted.get((event, user))
            while times:
                if time.monotonic() - times.pop(0) <= NOTED_FOR:
                    return True
            self._noted.pop((event, user), None)
        return False

    def get(self, name: str) -> UserRecord | None:
        row = self._one(GET_USER, (name,))
        return _record(row) if row else None

    def list(self) -> list[UserRecord]:
        return [_record(r) for r in self._all(f"{_SELECT} ORDER BY name")]

    def add(self, name: str, *, is_admin: bool, password_hash: str | None, now: float) -> None:
        try:
            self._call("SELECT jctotp_add_user(%s::text, %s::boolean, %s::text, %s::float8)",
                       (name, is_admin, password_hash, float(now)))
        except pgerrors.UniqueViolation:
            raise StoreError(f"user {name!r} already exists") from None

    def delete(self, name: str) -> bool:
        event = self._call("SELECT jctotp_delete_user(%s::text, %s::text)", (name, ADMIN))
        self._note(event, name)
        return event is not None

    def update(self, name: str, **values: Any) -> bool:
        """Set plain columns of one user (admin/self-service edits), in one statement."""
        bad = set(values) - set(USER_COLUMNS) - {"name"}
        if bad or not values:
            raise ValueError(f"bad columns {bad}")
        event = self._call("SELECT jctotp_update_user(%s::text, %s::jsonb, %s::text)",
                           (name, Jsonb({k: _json(v) for k, v in values.items()}), ADMIN))
        self._note(event, name)
        return event is not None

    # --- lockout: single statements, no read-modify-write -----------------------------

    def expire_lock(self, name: str, now: float, unlock_after: int) -> bool:
        return bool(self._call("SELECT jctotp_expire_lock(%s::text, %s::float8, %s::int)",
                               (name, float(now), unlock_after)))

    def reserve_attempt(self, name: str, now: float, interval: int, limit: int) -> int | None:
        """Count one attempt BEFORE the factors are checked (see sqlite.py)."""
        count = self._call(RESERVE_ATTEMPT, {"name": name, "now": float(now),
                                             "start": float(now - interval), "limit": limit})
        return None if count is None else int(count)

    def release_attempt(self, name: str) -> None:
        """Give back one reserved attempt (a conversation abandoned before any wrong factor)."""
        self._call("SELECT jctotp_release_attempt(%s::text)", (name,))

    def lock_if_exhausted(self, name: str, now: float, limit: int, reason: str) -> bool:
        return bool(self._call("SELECT jctotp_lock_if_exhausted(%s::text, %s::float8, "
                               "%s::int, %s::text)", (name, float(now), limit, reason)))

    def reset_failures(self, name: str) -> None:
        self._call(RESET_FAILURES, (name,))

    def unlock(self, name: str) -> bool:
        event = self._call("SELECT jctotp_unlock(%s::text, %s::text)", (name, ADMIN))
        self._note(event, name)
        return event is not None

    # --- TOTP replay guard ---------------------------------------------------------------

    def accept_step(self, name: str, step: int, reset_failures: bool = False) -> bool:
        return bool(self._call(ACCEPT_STEP_AND_RESET if reset_failures else ACCEPT_STEP,
                               (name, step)))

    # --- recovery codes --------------------------------------------------------------

    def replace_recovery_codes(self, name: str, hashes: Iterable[str]) -> None:
        self._call("SELECT jctotp_set_recovery_codes(%s::text, %s::text[])", (name, list(hashes)))

    def use_recovery_code(self, name: str, code_hash: str, now: float) -> bool:
        return self._rowcount('UPDATE recovery_codes SET used_at = %s WHERE "user" = %s '
                              "AND code_hash = %s AND used_at IS NULL",
                              (now, name, code_hash)) == 1

    def recovery_codes_left(self, name: str) -> int:
        row = self._one('SELECT count(*) FROM recovery_codes WHERE "user" = %s '
                        "AND used_at IS NULL", (name,))
        return int(row[0]) if row else 0

    def clear_recovery_codes(self, name: str) -> None:
        self._call("SELECT jctotp_clear_recovery_codes(%s::text)", (name,))
