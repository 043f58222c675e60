"""The state database: SQLite in WAL mode, with versioned migrations.

Every counter that decides a login (failed attempts, the lock, the last
accepted TOTP step, single-use recovery codes) changes in ONE SQL statement,
so concurrent logins can never race past a limit. The daemon is the only
writer; it keeps one connection open for its lifetime.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .errors import StoreError

# Each entry upgrades the schema by one version (PRAGMA user_version).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE users (
        name              TEXT PRIMARY KEY,
        is_admin          INTEGER NOT NULL DEFAULT 0,
        password_hash     TEXT,
        mfa_required      INTEGER NOT NULL DEFAULT 0,
        enroll_deadline   REAL,
        totp_secret       BLOB,
        pending_secret    BLOB,
        last_step         INTEGER NOT NULL DEFAULT -1,
        failed_count      INTEGER NOT NULL DEFAULT 0,
        fail_window_start REAL,
        locked_at         REAL,
        lock_reason       TEXT,
        max_attempts      INTEGER,
        created_at        REAL NOT NULL,
        enrolled_at       REAL
    );
    CREATE TABLE recovery_codes (
        user      TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        code_hash TEXT NOT NULL,
        used_at   REAL,
        PRIMARY KEY (user, code_hash)
    );
    """,
]


@dataclass(frozen=True)
class UserRecord:
    name: str
    is_admin: bool
    password_hash: str | None
    mfa_required: bool
    enroll_deadline: float | None
    totp_secret: bytes | None
    pending_secret: bytes | None
    last_step: int
    failed_count: int
    fail_window_start: float | None
    locked_at: float | None
    lock_reason: str | None
    max_attempts: int | None
    created_at: float
    enrolled_at: float | None

    def __repr__(self) -> str:  # never print hashes or ciphertexts
        return f"UserRecord(name={self.name!r}, admin={self.is_admin})"


_COLUMNS = [f for f in UserRecord.__dataclass_fields__]


class Store:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if str(self.path) != ":memory:":
            # SQLite creates -wal and -shm with the database file's mode, so the
            # file must be 0600 before the first connect, not after.
            try:
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
                os.chmod(self.path, 0o600)
            except OSError as exc:
                raise StoreError(f"cannot create state database {self.path}: {exc}") from None
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._tx = _Transaction(self._db)
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state database {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path} has schema version {version}, newer than this "
                             f"jctotpd understands ({len(MIGRATIONS)}); upgrade jctotpd")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={number}")

    def transaction(self) -> "_Transaction":
        return self._tx

    def _exec(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"state database error: {exc}") from None

    # --- users -----------------------------------------------------------

    def get(self, name: str) -> UserRecord | None:
        row = self._exec(f"SELECT {', '.join(_COLUMNS)} FROM users WHERE name = ?",
                         (name,)).fetchone()
        return UserRecord(*row) if row else None

    def list(self) -> list[UserRecord]:
        rows = self._exec(f"SELECT {', '.join(_COLUMNS)} FROM users ORDER BY name").fetchall()
        return [UserRecord(*r) for r in rows]

    def add(self, name: str, *, is_admin: bool, password_hash: str | None, now: float) -> None:
        try:
            self._db.execute(
                "INSERT INTO users (name, is_admin, password_hash, created_at) "
                "VALUES (?, ?, ?, ?)", (name, int(is_admin), password_hash, now))
        except sqlite3.IntegrityError:
            raise StoreError(f"user {name!r} already exists") from None

    def delete(self, name: str) -> bool:
        return self._exec("DELETE FROM users WHERE name = ?", (name,)).rowcount == 1

    def update(self, name: str, **values: Any) -> bool:
        """Set plain columns of one user (admin/self-service edits)."""
        bad = set(values) - set(_COLUMNS) - {"name"}
        if bad or not values:
            raise ValueError(f"bad columns {bad}")
        assignments = ", ".join(f"{k} = ?" for k in values)
        cur = self._exec(f"UPDATE users SET {assignments} WHERE name = ?",
                         (*values.values(), name))
        return cur.rowcount == 1

    # --- lockout: single statements, no read-modify-write ----------------

    def expire_lock(self, name: str, now: float, unlock_after: int) -> bool:
        """Lift a lock older than unlock_after (0 = never by time)."""
        cur = self._exec(
            "UPDATE users SET locked_at = NULL, lock_reason = NULL, failed_count = 0, "
            "fail_window_start = NULL WHERE name = ? AND locked_at IS NOT NULL "
            "AND ? > 0 AND locked_at <= ?", (name, unlock_after, now - unlock_after))
        return cur.rowcount == 1

    def reserve_attempt(self, name: str, now: float, interval: int, limit: int) -> int | None:
        """Count one attempt BEFORE the factors are checked.

        Returns the attempt's number inside the current window, or None when
        the account is locked or the window's `limit` is used up — then the
        factors must not even be checked. A success later calls reset_failures.
        """
        start = now - interval
        row = self._exec(
            """
            UPDATE users SET
              failed_count = CASE WHEN fail_window_start IS NULL OR fail_window_start <= :start
                                  THEN 1 ELSE failed_count + 1 END,
              fail_window_start = CASE WHEN fail_window_start IS NULL
                                         OR fail_window_start <= :start
                                       THEN :now ELSE fail_window_start END
            WHERE name = :name AND locked_at IS NULL
              AND (fail_window_start IS NULL OR fail_window_start <= :start
                   OR failed_count < :limit)
            RETURNING failed_count
            """, {"name": name, "now": now, "start": start, "limit": limit}).fetchone()
        return row[0] if row else None

    def lock_if_exhausted(self, name: str, now: float, limit: int, reason: str) -> bool:
        """After a failed attempt: lock when the window's count reached the limit."""
        cur = self._exec(
            "UPDATE users SET locked_at = ?, lock_reason = ? "
            "WHERE name = ? AND locked_at IS NULL AND failed_count >= ?",
            (now, reason, name, limit))
        return cur.rowcount == 1

    def lock(self, name: str, now: float, reason: str) -> bool:
        cur = self._exec("UPDATE users SET locked_at = ?, lock_reason = ? "
                         "WHERE name = ? AND locked_at IS NULL", (now, reason, name))
        return cur.rowcount == 1

    def reset_failures(self, name: str) -> None:
        self._exec("UPDATE users SET failed_count = 0, fail_window_start = NULL "
                   "WHERE name = ?", (name,))

    def unlock(self, name: str) -> bool:
        cur = self._exec(
            "UPDATE users SET locked_at = NULL, lock_reason = NULL, failed_count = 0, "
            "fail_window_start = NULL WHERE name = ?", (name,))
        return cur.rowcount == 1

    # --- TOTP replay guard -----------------------------------------------

    def accept_step(self, name: str, step: int) -> bool:
        """Record `step` as used; False if it is not newer than the last one (replay)."""
        cur = self._exec("UPDATE users SET last_step = ? WHERE name = ? AND last_step < ?",
                         (step, name, step))
        return cur.rowcount == 1

    # --- recovery codes --------------------------------------------------

    def replace_recovery_codes(self, name: str, hashes: Iterable[str]) -> None:
        with self.transaction():
            self._exec("DELETE FROM recovery_codes WHERE user = ?", (name,))
            self._db.executemany("INSERT INTO recovery_codes (user, code_hash) VALUES (?, ?)",
                                 [(name, h) for h in hashes])

    def use_recovery_code(self, name: str, code_hash: str, now: float) -> bool:
        cur = self._exec("UPDATE recovery_codes SET used_at = ? WHERE user = ? "
                         "AND code_hash = ? AND used_at IS NULL", (now, name, code_hash))
        return cur.rowcount == 1

    def recovery_codes_left(self, name: str) -> int:
        return self._exec("SELECT count(*) FROM recovery_codes WHERE user = ? "
                          "AND used_at IS NULL", (name,)).fetchone()[0]

    def clear_recovery_codes(self, name: str) -> None:
        self._exec("DELETE FROM recovery_codes WHERE user = ?", (name,))


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT/ROLLBACK, taking the write lock up front.

    Re-entrant: an inner `with` joins the outer transaction. Never held across
    a conversation step (all store calls are synchronous on the event loop).
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._depth = 0

    def __enter__(self) -> None:
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
        self._depth += 1

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
