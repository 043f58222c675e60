"""The SQLite backend: files, WAL, migrations, connections (pam_jctotp/store/sqlite.py).

What every backend must do is in test_store_contract.py.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time

import pytest

from pam_jctotp.errors import StoreError
from pam_jctotp.store.sqlite import BUSY_TIMEOUT, MIGRATIONS
from pam_jctotp.store.sqlite import SqliteStore as Store

NOW = 1_700_000_000.0


@pytest.fixture
def db(tmp_path):
    return tmp_path / "jctotp.db"


@pytest.fixture
def store(db):
    s = Store(db)
    s.add("alice", is_admin=False, password_hash="h", now=NOW)
    yield s
    s.close()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- opening -------------------------------------------------------------------

def test_migrations_set_user_version_and_run_once(db):
    s = Store(db)
    s.add("alice", is_admin=True, password_hash=None, now=NOW)
    s.close()
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    raw.close()
    again = Store(db)  # re-opening does not re-run (CREATE TABLE would fail)
    assert again.get("alice").is_admin
    again.close()


def test_a_version_1_database_is_upgraded_in_place(db):
    """Migration 2 (issue 11) adds email and enroll_now to existing rows."""
    raw = sqlite3.connect(db)
    raw.executescript(MIGRATIONS[0])
    raw.execute("INSERT INTO users (name, is_admin, mfa_required, created_at) "
                "VALUES ('old', 1, 1, 1.0)")
    raw.execute("PRAGMA user_version=1")
    raw.commit()
    raw.close()
    s = Store(db)
    rec = s.get("old")
    assert rec.is_admin is True and rec.email is None and rec.enroll_now is False
    s.close()


def test_a_newer_schema_is_refused(db):
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    raw.close()
    with pytest.raises(StoreError, match="upgrade jctotpd"):
        Store(db)


def test_wal_mode(store, db):
    assert store._conn().db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert os.path.exists(f"{db}-wal")


def test_database_and_its_wal_files_are_0600(store, db):
    store.update("alice", password_hash="x")  # something in the WAL
    for path in (db, f"{db}-wal", f"{db}-shm"):
        assert mode(path) == 0o600, path


def test_an_existing_world_readable_database_is_tightened(db):
    db.touch(mode=0o644)
    os.chmod(db, 0o644)
    Store(db).close()
    assert mode(db) == 0o600


def test_an_unopenable_path_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="state database"):
        Store(tmp_path / "missing-dir" / "x.db")


def test_memory_database(tmp_path):
    s = Store(":memory:")
    s.add("a", is_admin=False, password_hash=None, now=NOW)
    assert [r.name for r in s.list()] == ["a"]
    assert not os.path.exists(":memory:")


# --- many connections ---------------------------------------------------------------

def test_parallel_reservations_never_exceed_the_limit(db, store):
    """N connections race; the single UPDATE lets exactly `limit` through."""
    limit, n = 5, 24
    results: list[int | None] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)
    stores = [Store(db) for _ in range(n)]

    def guess(s: Store) -> None:
        try:
            barrier.wait()
            results.append(s.reserve_attempt("alice", NOW, 900, limit))
        except BaseException as exc:  # noqa: B036 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=guess, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert not errors, errors
    assert sorted(r for r in results if r is not None) == list(range(1, limit + 1))
    assert results.count(None) == n - limit
    assert store.get("alice").failed_count == limit



def test_recovery_codes_belong_to_one_user(store):
    store.add("bob", is_admin=False, password_hash=None, now=NOW)
    store.replace_recovery_codes("alice", ["h1"])
    assert not store.use_recovery_code("bob", "h1", NOW)
    store.delete("alice")  # ON DELETE CASCADE
    assert store._conn().db.execute("SELECT count(*) FROM recovery_codes").fetchone()[0] == 0


# --- transactions -------------------------------------------------------------

def test_an_inner_failure_rolls_back_the_outer_work(store):
    with pytest.raises(RuntimeError), store.unit_of_work():
        store.update("alice", max_attempts=7)
        with store.unit_of_work():
            raise RuntimeError("inner")
    assert store.get("alice").max_attempts is None
    assert not store._conn().db.in_transaction


# --- one connection per thread; a locked database fails fast ------------------------

def test_each_thread_has_its_own_connection(store):
    """A unit of work open in one thread is invisible to (and never joined by) another."""
    seen: list[int | None] = []
    with store.unit_of_work():
        store.update("alice", max_attempts=7)
        t = threading.Thread(target=lambda: seen.append(store.get("alice").max_attempts))
        t.start()
        t.join()
    assert seen == [None]  # the other thread read the committed state
    assert store.get("alice").max_attempts == 7


def test_a_database_locked_by_another_process_fails_a_write_fast(store, db):
    """Issue 9 item 5: a held lock costs one write about BUSY_TIMEOUT, never the shim's 10 s."""
    assert BUSY_TIMEOUT <= 1.0
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert store.get("alice") is not None  # WAL: reads go on
        started = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            store.reserve_attempt("alice", NOW, 900, 5)
        assert time.monotonic() - started < 5  # generous: about 1 s
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.reserve_attempt("alice", NOW, 900, 5) == 1


# --- several processes, checkpoints ----------------------------------------------------

def _reserve_in_a_process(db: str, limit: int, n: int, start: float, out) -> None:
    s = Store(db)
    while time.time() < start:
        time.sleep(0.0005)
    out.put([s.reserve_attempt("alice", NOW, 900, limit) for _ in range(n)])
    s.close()


def test_writers_of_several_processes_take_turns_and_never_exceed_the_limit(db, store):
    """pam_processes > 1: two processes race on one counter. The writer flock makes
    them take turns (no SQLite busy-handler sleeps); the single UPDATE still lets
    exactly `limit` through."""
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + 1.5
    procs = [ctx.Process(target=_reserve_in_a_process, args=(str(db), 40, 30, start, out))
             for _ in range(2)]
    for p in procs:
        p.start()
    results = out.get(timeout=30) + out.get(timeout=30)
    for p in procs:
        p.join(10)
    assert sorted(r for r in results if r is not None) == list(range(1, 41))
    assert results.count(None) == 20
    assert store.get("alice").failed_count == 40


def test_the_writer_lock_of_another_process_fails_a_write_within_the_busy_timeout(db, store):
    import fcntl
    fd = os.open(f"{db}-writer", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            store.reserve_attempt("alice", NOW, 900, 5)
        assert time.monotonic() - started < 5  # generous: about 1 s
    finally:
        os.close(fd)
    assert store.reserve_attempt("alice", NOW, 900, 5) == 1


def test_checkpoints_run_on_their_own_thread_and_keep_the_wal_small(db, store):
    """No commit checkpoints (wal_autocheckpoint 0: the fsync stalled the login that
    committed); the sqlite-checkpoint thread does, so 4,000 writes over a second
    leave a WAL of a few hundred pages, not the ~8,000 they wrote."""
    conn = sqlite3.connect(db)
    assert store._conn().db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    conn.close()
    for i in range(4000):
        store.reserve_attempt("alice", NOW + i, 1, 100)
        if i % 200 == 0:
            time.sleep(0.05)
    assert any(t.name == "sqlite-checkpoint" for t in threading.enumerate())
    wal_pages = os.path.getsize(f"{db}-wal") // 4096
    assert wal_pages < 2000, wal_pages
