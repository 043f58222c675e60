"""The failure counters of unknown names, shared by all the daemon's processes on a host.

With `pam_processes: N` several processes accept logins; counters kept in
each one's memory would let an unknown name be tried up to N x max_attempts
times before it shows "locked", where a real user locks at max_attempts: a
remote user-enumeration oracle. This table (core/lockout.py's `NameTable`)
keeps them in one SQLite file instead, <state_dir>/unknown-names.db: its
own file, so the hot path of real logins never waits on it.

Each `transaction()` is BEGIN IMMEDIATE … COMMIT on this thread's connection
(WAL, synchronous=NORMAL): the rule's read and write are one step for every
thread and process. A database locked for longer than BUSY_TIMEOUT raises
StoreError, so that login fails closed. Bounded like the in-memory table: a
new name beyond `size` drops the least recently seen ones (`seen` is a
sequence, not a clock, so ties cannot happen).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..core.lockout import CounterRow, NameRows
from ..errors import StoreError
from .wal import open_wal

BUSY_TIMEOUT = 1.0  # seconds, as the state database's (sqlite.py)

SCHEMA = """
CREATE TABLE IF NOT EXISTS unknown_names (
    name              TEXT PRIMARY KEY,
    failed_count      INTEGER NOT NULL DEFAULT 0,
    fail_window_start REAL,
    locked_at         REAL,
    seen              INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS unknown_names_seen ON unknown_names(seen)
"""
_NEXT_SEEN = "(SELECT coalesce(max(seen), 0) + 1 FROM unknown_names)"


class SharedUnknownNames:
    """A `NameTable` in a SQLite file: safe across threads and processes."""

    def __init__(self, path: str | os.PathLike[str], size: int = 4096,
                 busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = Path(path)
        self.size = size
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []  # every thread's, for close()
        self._inherited: list[sqlite3.Connection] = []  # across a fork: left alone
        self._guard = threading.Lock()
        # This process's threads take turns here, not in SQLite's busy handler
        # (it sleeps 1, 2, 5, 10… ms between retries; see sqlite.py).
        self._writer = threading.Lock()
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _in_forked_child(me))
        try:
            # -wal and -shm get the database file's mode: 0600 before the first connect.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            os.chmod(self.path, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path}: {exc}") from None
        try:
            self._conn().executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None

    def _conn(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                db = open_wal(self.path, self.busy_timeout)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.path}: {exc}") from None
            self._local.db = db
            with self._guard:
                self._all.append(db)
        return db

    def _forked(self) -> None:
        """In a forked child: new connections (SQLite's rule: none crosses a fork)
        and a new lock (a thread gone with the fork may have held it). The
        inherited connection is kept, never closed: that would touch the
        parent's file locks."""
        self._local = threading.local()
        self._writer = threading.Lock()
        self._guard = threading.Lock()
        self._inherited.extend(self._all)
        self._all = []

    @contextmanager
    def transaction(self) -> Iterator[NameRows]:
        if not self._writer.acquire(timeout=self.busy_timeout):
            raise StoreError(f"{self.path}: database is locked (by another thread)")
        try:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from None
            try:
                yield _Rows(db, self.size)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(db)
                raise StoreError(f"{self.path}: {exc}") from None
            except BaseException:
                _rollback(db)
                raise
        finally:
            self._writer.release()

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM unknown_names").fetchone()[0])

    def names(self) -> list[str]:
        """The names held, least recently seen first (tests, doctor)."""
        return [r[0] for r in
                self._conn().execute("SELECT name FROM unknown_names ORDER BY seen")]

    def close(self) -> None:
        with self._guard:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()


def _in_forked_child(ref: weakref.ref[SharedUnknownNames]) -> None:
    table = ref()
    if table is not None:
        table._forked()


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL, IOERR)
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass


class _Rows:
    """The rows of one open transaction (core/lockout.py's NameRows)."""

    def __init__(self, db: sqlite3.Connection, size: int) -> None:
        self.db = db
        self.size = size

    def get(self, name: str) -> CounterRow | None:
        found = self.db.execute(
            "SELECT failed_count, fail_window_start, locked_at FROM unknown_names "
            "WHERE name = ?", (name,)).fetchone()
        return CounterRow(*found) if found is not None else None

    def put(self, name: str, row: CounterRow) -> None:
        values = (row.failed_count, row.fail_window_start, row.locked_at, name)
        if self.db.execute(
                "UPDATE unknown_names SET failed_count = ?, fail_window_start = ?, "
                f"locked_at = ?, seen = {_NEXT_SEEN} WHERE name = ?", values).rowcount:
            return
        self.db.execute("INSERT INTO unknown_names (failed_count, fail_window_start, "
                        f"locked_at, name, seen) VALUES (?, ?, ?, ?, {_NEXT_SEEN})", values)
        # Only a new name can take the table past its size: the count is paid then.
        over = self.db.execute("SELECT count(*) FROM unknown_names").fetchone()[0] - self.size
        if over > 0:
            self.db.execute("DELETE FROM unknown_names WHERE seen IN "
                            "(SELECT seen FROM unknown_names ORDER BY seen LIMIT ?)", (over,))
