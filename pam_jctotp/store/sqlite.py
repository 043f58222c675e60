"""The SQLite backend of `Store`: WAL mode, versioned migrations, one connection per thread.

The daemon runs conversation steps in worker threads; each thread has its own
connection (thread-local), so two steps never share a transaction, and a unit
of work is bound to the connection it began on. The busy timeout is short
(BUSY_TIMEOUT): a database locked by someone else fails one login within a
second (StoreError -> AUTHINFO_UNAVAIL), well inside the shim's timeout.

Writers of this process take turns on one Python lock (`_writing`) rather
than meeting in SQLite: its busy handler sleeps 1, 2, 5, 10… ms before each
retry, so at 50 concurrent logins a 20 µs UPDATE often cost milliseconds.
Writers of several processes (`pam_processes`) then take turns on an flock
of `<db>-writer`, retried every 0.1-2 ms, for the same reason. Both are
waited for at most the busy timeout too. WAL readers take no lock.

Checkpoints run on a thread of their own (`sqlite-checkpoint`, CHECKPOINT_EVERY
after a write), never in a login's step: SQLite's automatic one runs in the
commit that fills the WAL and fsyncs there (4-15 ms on a VM disk, a dozen
times a second at 3,000 logins/s), which held up every login behind it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..model import UserRecord
from . import SELECT_USERS as _SELECT
from . import USER_COLUMNS
from . import record as _record
from .wal import open_wal

BUSY_TIMEOUT = 1.0  # seconds; the shim waits 10 s by default (1..60)
CHECKPOINT_EVERY = 0.1  # seconds after a write: the WAL stays a few thousand pages

log = logging.getLogger("jctotpd")

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
    # 2: account_name's {email}; "enroll now" (mfa required with no period at all)
    """
    ALTER TABLE users ADD COLUMN email TEXT;
    ALTER TABLE users ADD COLUMN enroll_now INTEGER NOT NULL DEFAULT 0
    """,
]



class _Connection:
    """One thread's connection and its unit-of-work depth."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.depth = 0
        self.owner = 0  # the thread that began the open unit of work


class SqliteStore:
    def __init__(self, path: str | os.PathLike[str], busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._memory = str(self.path) == ":memory:"  # tests only: one shared connection
        self._local = threading.local()
        self._all: list[_Connection] = []
        self._guard = threading.Lock()
        self._writer = threading.Lock()  # one writing connection at a time (see _writing)
        self._writer_fd = -1             # ... and one writing process (flock)
        self._dirty = threading.Event()  # written since the last checkpoint
        self._checkpointer: threading.Thread | None = None
        self._closed = threading.Event()
        if not self._memory:
            # SQLite creates -wal and -shm with the database file's mode, so the
            # file must be 0600 before the first connect, not after.
            try:
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
                os.chmod(self.path, 0o600)
                self._writer_fd = os.open(f"{self.path}-writer",
                                          os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StoreError(f"cannot create state database {self.path}: {exc}") from None
        try:
            self._migrate(self._conn().db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state database {self.path}: {exc}") from None

    # --- connections ----------------------------------------------------------

    def _conn(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._guard:
                if self._memory and self._all:
                    conn = self._all[0]
                else:
                    conn = _Connection(self._connect())
                    self._all.append(conn)
            self._local.conn = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            db = open_wal(self.path, self.busy_timeout)
            db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpoint thread's job
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state database {self.path}: {exc}") from None
        return db

    def close(self) -> None:
        self._closed.set()   # the checkpoint thread ends
        self._dirty.set()
        if self._checkpointer is not None:
            self._checkpointer.join(1.0)
        with self._guard:
            for conn in self._all:
                conn.db.close()
            self._all.clear()
            if self._writer_fd >= 0 and self._writer.acquire(timeout=self.busy_timeout):
                os.close(self._writer_fd)
                self._writer_fd = -1
                self._writer.release()
        self._local = threading.local()

    def database_now(self, fresh: bool = False) -> None:
        return None   # one host: its own clock is the store's

    def compact(self) -> None:
        """Rewrite the file without the pages of deleted rows (VACUUM) and empty the
        WAL: what was deleted no longer sits on the disk (the break-glass copy's drop)."""
        self._take_writer()
        try:
            self._exec("VACUUM")
            self._exec("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._release_writer()

    def health(self) -> list[tuple[str, str]]:
        try:
            version = self._exec("PRAGMA user_version").fetchone()[0]
        except StoreError as exc:
            return [("fail", str(exc))]
        return [("ok", f"state database {self.path} (SQLite, schema version {version})")]

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path} has schema version {version}, newer than this "
                             f"jctotpd understands ({len(MIGRATIONS)}); upgrade jctotpd")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.unit_of_work():
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT/ROLLBACK on this thread's connection.

        Re-entrant: an inner one joins the outer one. Ending on another thread
        than it began means a conversation yielded inside it: refused.
        """
        conn = self._conn()
        me = threading.get_ident()
        if conn.depth == 0:
            self._take_writer()
            try:
                self._exec("BEGIN IMMEDIATE", conn=conn)
            except BaseException:
                self._release_writer()
                raise
            conn.owner = me
        conn.depth += 1
        ok = False
        try:
            yield
            ok = True
        finally:
            if threading.get_ident() != conn.owner:
                raise StoreError("a unit of work was held across a conversation step")
            conn.depth -= 1
            if conn.depth == 0:
                try:
                    self._exec("COMMIT" if ok else "ROLLBACK", conn=conn)
                finally:
                    self._release_writer()

    def _take_writer(self) -> None:
        deadline = time.monotonic() + self.busy_timeout
        if not self._writer.acquire(timeout=self.busy_timeout):
            raise StoreError("state database error: database is locked (by another "
                             "writer of this daemon)")
        if self._writer_fd < 0:
            return
        pause = 0.0001
        while True:
            try:
                fcntl.flock(self._writer_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            except OSError as exc:
                self._writer.release()
                raise StoreError(f"state database error: writer lock: {exc}") from None
            if time.monotonic() + pause > deadline:
                self._writer.release()
                raise StoreError("state database error: database is locked (by another "
                                 "process of this daemon)")
            time.sleep(pause)
            pause = min(0.002, pause * 2)

    def _release_writer(self) -> None:
        if self._writer_fd >= 0:
            fcntl.flock(self._writer_fd, fcntl.LOCK_UN)
        self._writer.release()
        if not self._memory and not self._dirty.is_set():
            self._dirty.set()
            if self._checkpointer is None:
                self._start_checkpointer()

    def _start_checkpointer(self) -> None:
        with self._guard:
            if self._checkpointer is not None or self._closed.is_set():
                return
            self._checkpointer = threading.Thread(target=self._checkpoints,
                                                  name="sqlite-checkpoint", daemon=True)
        self._checkpointer.start()

    def _checkpoints(self) -> None:
        """PASSIVE checkpoints (they never wait for, nor block, a writer or a reader)."""
        db = self._connect()
        complained = 0.0
        try:
            while True:
                self._dirty.wait()
                if self._closed.wait(CHECKPOINT_EVERY):
                    return
                self._dirty.clear()
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    if time.monotonic() - complained > 60:
                        complained = time.monotonic()
                        log.warning("state database %s: checkpoint failed: %s (the WAL "
                                    "grows until one succeeds)", self.path, exc)
        finally:
            db.close()

    @contextmanager
    def _writing(self, conn: _Connection) -> Iterator[None]:
        """This process's turn to write; already ours inside a unit of work."""
        if conn.depth > 0:
            yield
            return
        self._take_writer()
        try:
            yield
        finally:
            self._release_writer()

    def _write(self, sql: str, params: Any = ()) -> tuple[int, list[Any]]:
        """One writing statement, run to its end (and, outside a unit of work,
        committed) while this process's writer lock is held: (rowcount, rows)."""
        conn = self._conn()
        with self._writing(conn):
            try:
                cur = conn.db.execute(sql, params)
                rows = cur.fetchall()  # RETURNING: the statement ends (commits) here
                count = cur.rowcount
                cur.close()
            except sqlite3.Error as exc:
                raise StoreError(f"state database error: {exc}") from None
        return count, rows

    def _exec(self, sql: str, params: Any = (), conn: _Connection | None = None
              ) -> sqlite3.Cursor:
        try:
            return (conn or self._conn()).db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"state database error: {exc}") from None

    # --- users -----------------------------------------------------------

    def get(self, name: str) -> UserRecord | None:
        row = self._exec(f"{_SELECT} WHERE name = ?", (name,)).fetchone()
        return _record(row) if row else None

    def list(self) -> list[UserRecord]:
        return [_record(r) for r in self._exec(f"{_SELECT} ORDER BY name").fetchall()]

    def add(self, name: str, *, is_admin: bool, password_hash: str | None, now: float) -> None:
        conn = self._conn()
        with self._writing(conn):
            try:
                conn.db.execute(
                    "INSERT INTO users (name, is_admin, password_hash, created_at) "
                    "VALUES (?, ?, ?, ?)", (name, int(is_admin), password_hash, now))
            except sqlite3.IntegrityError:
                raise StoreError(f"user {name!r} already exists") from None
            except sqlite3.Error as exc:
                raise StoreError(f"state database error: {exc}") from None

    def delete(self, name: str) -> bool:
        return self._write("DELETE FROM users WHERE name = ?", (name,))[0] == 1

    def update(self, name: str, **values: Any) -> bool:
        """Set plain columns of one user (admin/self-service edits), in one statement."""
        bad = set(values) - set(USER_COLUMNS) - {"name"}
        if bad or not values:
            raise ValueError(f"bad columns {bad}")
        assignments = ", ".join(f"{k} = ?" for k in values)
        return self._write(f"UPDATE users SET {assignments} WHERE name = ?",
                           (*values.values(), name))[0] == 1

    # --- lockout: single statements, no read-modify-write ----------------

    def expire_lock(self, name: str, now: float, unlock_after: int) -> bool:
        """Lift a lock older than unlock_after (0 = never by time); resets the counter."""
        return self._write(
            "UPDATE users SET locked_at = NULL, lock_reason = NULL, failed_count = 0, "
            "fail_window_start = NULL WHERE name = ? AND locked_at IS NOT NULL "
            "AND ? > 0 AND locked_at <= ?", (name, unlock_after, now - unlock_after))[0] == 1

    def reserve_attempt(self, name: str, now: float, interval: int, limit: int) -> int | None:
        """Count one attempt BEFORE the factors are checked.

        Returns the attempt's number inside the current window, or None when
        the account is locked or the window's `limit` is used up — then the
        factors must not even be checked. A success later calls reset_failures.
        """
        start = now - interval
        _, rows = self._write(
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
            """, {"name": name, "now": now, "start": start, "limit": limit})
        return rows[0][0] if rows else None

    def release_attempt(self, name: str) -> None:
        """Give back one reserved attempt (a conversation abandoned before any wrong factor)."""
        self._write("UPDATE users SET failed_count = failed_count - 1 "
                    "WHERE name = ? AND failed_count > 0 AND locked_at IS NULL", (name,))

    def lock_if_exhausted(self, name: str, now: float, limit: int, reason: str) -> bool:
        """After a failed attempt: lock when the window's count reached the limit."""
        return self._write(
            "UPDATE users SET locked_at = ?, lock_reason = ? "
            "WHERE name = ? AND locked_at IS NULL AND failed_count >= ?",
            (now, reason, name, limit))[0] == 1

    def reset_failures(self, name: str) -> None:
        self._write("UPDATE users SET failed_count = 0, fail_window_start = NULL "
                    "WHERE name = ?", (name,))

    def unlock(self, name: str) -> bool:
        return self._write(
            "UPDATE users SET locked_at = NULL, lock_reason = NULL, failed_count = 0, "
            "fail_window_start = NULL WHERE name = ?", (name,))[0] == 1

    # --- TOTP replay guard -----------------------------------------------

    def accept_step(self, name: str, step: int, reset_failures: bool = False) -> bool:
        """Record `step` as used; False if it is not newer than the last one (replay).
        With `reset_failures`, the counter starts over in the same statement."""
        reset = ", failed_count = 0, fail_window_start = NULL" if reset_failures else ""
        return self._write(f"UPDATE users SET last_step = ?{reset} WHERE name = ? "
                           "AND last_step < ?", (step, name, step))[0] == 1

    # --- recovery codes --------------------------------------------------

    def replace_recovery_codes(self, name: str, hashes: Iterable[str]) -> None:
        with self.unit_of_work():
            self._write("DELETE FROM recovery_codes WHERE user = ?", (name,))
            for code_hash in hashes:
                self._write("INSERT INTO recovery_codes (user, code_hash) VALUES (?, ?)",
                            (name, code_hash))

    def use_recovery_code(self, name: str, code_hash: str, now: float) -> bool:
        return self._write("UPDATE recovery_codes SET used_at = ? WHERE user = ? AND "
                           "code_hash = ? AND used_at IS NULL", (now, name, code_hash))[0] == 1

    def recovery_codes_left(self, name: str) -> int:
        count: int = self._exec("SELECT count(*) FROM recovery_codes WHERE user = ? "
                                "AND used_at IS NULL", (name,)).fetchone()[0]
        return count

    def clear_recovery_codes(self, name: str) -> None:
        self._write("DELETE FROM recovery_codes WHERE user = ?", (name,))
