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
StoreError, so that login fails closed. Bounded by the in-memory table's
rule (core/name_table.py): keyed buckets, the key in the file (every process
the same), a live lock never dropped, a bucket full of them sharing one row.
`seen` is a sequence, not a clock, so ties cannot happen.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ..core.name_table import (
    FRESH,
    SIZE,
    CounterRow,
    NameRows,
    Weigh,
    bucket_of,
    geometry,
    lightest,
    new_key,
)
from ..errors import StoreError
from .wal import open_wal

BUSY_TIMEOUT = 1.0  # seconds, as the state database's (sqlite.py)

# Version 2 (issue 20): buckets. The table of version 1 (no buckets) is dropped:
# counters of names nobody has, lost as the in-memory ones are at a restart.
SCHEMA = """
DROP TABLE IF EXISTS unknown_names;
CREATE TABLE IF NOT EXISTS names (
    name              TEXT PRIMARY KEY,
    bucket            INTEGER NOT NULL,
    failed_count      INTEGER NOT NULL DEFAULT 0,
    fail_window_start REAL,
    locked_at         REAL,
    seen              INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS names_seen ON names(seen);
CREATE INDEX IF NOT EXISTS names_bucket ON names(bucket);
CREATE TABLE IF NOT EXISTS shared (
    bucket            INTEGER PRIMARY KEY,
    failed_count      INTEGER NOT NULL DEFAULT 0,
    fail_window_start REAL,
    locked_at         REAL
);
CREATE TABLE IF NOT EXISTS bucket_key (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    key BLOB NOT NULL
);
"""
_NEXT_SEEN = "(SELECT coalesce(max(seen), 0) + 1 FROM names)"
_ROW = "failed_count, fail_window_start, locked_at"


class SharedUnknownNames:
    """A `NameTable` in a SQLite file: safe across threads and processes."""

    def __init__(self, path: str | os.PathLike[str], size: int = SIZE,
                 busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = Path(path)
        self.size = size
        self.buckets, self.slots = geometry(size)
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
            db = self._conn()
            db.executescript(SCHEMA)
            # The first process to open the file draws the key; the others read it.
            db.execute("INSERT OR IGNORE INTO bucket_key (one, key) VALUES (1, ?)",
                       (new_key(),))
            self.key = bytes(db.execute("SELECT key FROM bucket_key").fetchone()[0])
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
    def transaction(self, weigh: Weigh) -> Iterator[NameRows]:
        if not self._writer.acquire(timeout=self.busy_timeout):
            raise StoreError(f"{self.path}: database is locked (by another thread)")
        try:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from None
            try:
                yield _Rows(self, db, weigh)
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
        return int(self._conn().execute("SELECT count(*) FROM names").fetchone()[0])

    def names(self) -> list[str]:
        """The names held, least recently seen first (tests, doctor)."""
        return [r[0] for r in self._conn().execute("SELECT name FROM names ORDER BY seen")]

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
        with suppress(sqlite3.Error):
            db.execute("ROLLBACK")


class _Rows:
    """The rows of one open transaction (core/name_table.py's NameRows, its rule)."""

    def __init__(self, table: SharedUnknownNames, db: sqlite3.Connection, weigh: Weigh) -> None:
        self.t = table
        self.db = db
        self.weigh = weigh

    def _bucket(self, name: str) -> int:
        b = bucket_of(self.t.key, name, self.t.buckets)
        shared = self.db.execute(f"SELECT {_ROW} FROM shared WHERE bucket = ?", (b,)).fetchone()
        if shared is not None and self.weigh(CounterRow(*shared)) == FRESH:
            self.db.execute("DELETE FROM shared WHERE bucket = ?", (b,))
        return b

    def get(self, name: str) -> CounterRow | None:
        b = self._bucket(name)
        found = self.db.execute(f"SELECT {_ROW} FROM names WHERE name = ?", (name,)).fetchone()
        if found is None:  # a name not held starts from the shared row, if any
            found = self.db.execute(f"SELECT {_ROW} FROM shared WHERE bucket = ?",
                                    (b,)).fetchone()
        return CounterRow(*found) if found is not None else None

    def put(self, name: str, row: CounterRow) -> None:
        b = self._bucket(name)
        values = (*row, name)
        if self.db.execute(f"UPDATE names SET failed_count = ?, fail_window_start = ?, "
                           f"locked_at = ?, seen = {_NEXT_SEEN} WHERE name = ?",
                           values).rowcount:
            return
        held = self.db.execute(f"SELECT {_ROW}, seen, name FROM names WHERE bucket = ?",
                               (b,)).fetchall()
        if len(held) >= self.t.slots:
            victim = lightest([(self.weigh(CounterRow(*r[:3])), r[3], r[4]) for r in held])
            if victim is None:  # every one a live lock: none is forgotten
                self.db.execute(f"INSERT OR REPLACE INTO shared (bucket, {_ROW}) "
                                "VALUES (?, ?, ?, ?)", (b, *row))
                return
            self.db.execute("DELETE FROM names WHERE name = ?", (victim,))
        self.db.execute(f"INSERT INTO names ({_ROW}, name, bucket, seen) "
                        f"VALUES (?, ?, ?, ?, ?, {_NEXT_SEEN})", (*values, b))
