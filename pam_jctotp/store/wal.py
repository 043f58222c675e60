"""Opening a SQLite file in WAL mode, for the store and the unknown-names table."""

from __future__ import annotations

import os
import sqlite3
import time


def open_wal(path: str | os.PathLike[str], busy_timeout: float) -> sqlite3.Connection:
    """A connection in WAL mode. Switching a new file to WAL takes a lock that
    SQLite's busy handler does not wait for: two processes opening the same
    new file (`pam_processes`) got "database is locked". Retried until the
    busy timeout."""
    deadline = time.monotonic() + busy_timeout
    while True:
        db = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout,
                             check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            return db
        except sqlite3.OperationalError as exc:
            db.close()
            if "locked" not in str(exc) and "busy" not in str(exc) \
                    or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
