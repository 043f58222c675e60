"""The state database: pam_jctotp/store.py."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading

import pytest

from pam_jctotp.errors import StoreError
from pam_jctotp.store.sqlite import MIGRATIONS
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


# --- users ----------------------------------------------------------------------

def test_add_get_update_delete(store):
    with pytest.raises(StoreError, match="already exists"):
        store.add("alice", is_admin=False, password_hash=None, now=NOW)
    assert store.update("alice", max_attempts=3)
    assert store.get("alice").max_attempts == 3
    assert not store.update("nobody", max_attempts=3)
    with pytest.raises(ValueError):
        store.update("alice", no_such_column=1)
    with pytest.raises(ValueError):
        store.update("alice")
    assert store.delete("alice")
    assert store.get("alice") is None
    assert not store.delete("alice")


def test_record_repr_hides_hashes_and_ciphertexts(store):
    store.update("alice", password_hash="$argon2id$SECRETHASH", totp_secret=b"CIPHERTEXT")
    assert "SECRETHASH" not in repr(store.get("alice"))
    assert "CIPHERTEXT" not in repr(store.get("alice"))


# --- attempts and locks ------------------------------------------------------------

def test_reserve_attempt_counts_up_to_the_limit_then_refuses(store):
    assert [store.reserve_attempt("alice", NOW + i, 900, 3) for i in range(5)] == \
        [1, 2, 3, None, None]
    assert store.get("alice").failed_count == 3


def test_reserve_attempt_on_an_unknown_user_is_none(store):
    assert store.reserve_attempt("ghost", NOW, 900, 3) is None


def test_the_window_expires_after_fail_interval(store):
    for i in range(3):
        store.reserve_attempt("alice", NOW + i, 900, 3)
    assert store.reserve_attempt("alice", NOW + 899, 900, 3) is None  # window opened at NOW
    assert store.reserve_attempt("alice", NOW + 900, 900, 3) == 1     # a new window
    assert store.get("alice").fail_window_start == NOW + 900


def test_lock_if_exhausted_locks_only_at_the_limit(store):
    store.reserve_attempt("alice", NOW, 900, 2)
    assert not store.lock_if_exhausted("alice", NOW, 2, "too many")
    store.reserve_attempt("alice", NOW, 900, 2)
    assert store.lock_if_exhausted("alice", NOW, 2, "too many")
    assert not store.lock_if_exhausted("alice", NOW, 2, "too many")  # already locked
    rec = store.get("alice")
    assert (rec.locked_at, rec.lock_reason) == (NOW, "too many")
    # a locked account gets no attempt at all, even in a fresh window
    assert store.reserve_attempt("alice", NOW + 10_000, 900, 2) is None


def test_reset_failures_and_unlock(store):
    store.reserve_attempt("alice", NOW, 900, 1)
    store.lock_if_exhausted("alice", NOW, 1, "r")
    store.reset_failures("alice")
    assert store.get("alice").locked_at == NOW  # a reset does not unlock
    assert store.unlock("alice")
    rec = store.get("alice")
    assert (rec.locked_at, rec.failed_count, rec.fail_window_start) == (None, 0, None)
    assert store.reserve_attempt("alice", NOW, 900, 1) == 1


def test_expire_lock(store):
    store.lock("alice", NOW, "r")
    assert not store.expire_lock("alice", NOW + 899, 900)
    assert not store.expire_lock("alice", NOW + 10**9, 0)  # 0 = only an admin unlocks
    assert store.expire_lock("alice", NOW + 900, 900)
    assert store.get("alice").locked_at is None


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


# --- replay guard and recovery codes --------------------------------------------

def test_accept_step_only_moves_forward(store):
    assert store.accept_step("alice", 100)
    assert not store.accept_step("alice", 100)  # the same step: replay
    assert not store.accept_step("alice", 99)   # an older one too
    assert store.accept_step("alice", 101)
    assert store.get("alice").last_step == 101
    assert not store.accept_step("ghost", 1)


def test_recovery_codes_are_single_use(store):
    store.replace_recovery_codes("alice", ["h1", "h2"])
    assert store.recovery_codes_left("alice") == 2
    assert store.use_recovery_code("alice", "h1", NOW)
    assert not store.use_recovery_code("alice", "h1", NOW)
    assert not store.use_recovery_code("alice", "nope", NOW)
    assert store.recovery_codes_left("alice") == 1
    store.replace_recovery_codes("alice", ["h3"])
    assert not store.use_recovery_code("alice", "h2", NOW)  # the old set is gone
    assert store.recovery_codes_left("alice") == 1
    store.clear_recovery_codes("alice")
    assert store.recovery_codes_left("alice") == 0


def test_recovery_codes_belong_to_one_user(store):
    store.add("bob", is_admin=False, password_hash=None, now=NOW)
    store.replace_recovery_codes("alice", ["h1"])
    assert not store.use_recovery_code("bob", "h1", NOW)
    store.delete("alice")  # ON DELETE CASCADE
    assert store._conn().db.execute("SELECT count(*) FROM recovery_codes").fetchone()[0] == 0


# --- transactions -------------------------------------------------------------

def test_a_failing_transaction_rolls_back_everything(store):
    with pytest.raises(StoreError):
        with store.unit_of_work():
            store.update("alice", max_attempts=7)
            store.add("alice", is_admin=False, password_hash=None, now=NOW)
    assert store.get("alice").max_attempts is None


def test_nested_transactions_join_the_outer_one(store):
    with pytest.raises(RuntimeError):
        with store.unit_of_work():
            store.update("alice", max_attempts=7)
            with store.unit_of_work():  # re-entrant: no second BEGIN
                store.add("bob", is_admin=False, password_hash=None, now=NOW)
            raise RuntimeError("after the inner one committed nothing yet")
    assert store.get("alice").max_attempts is None
    assert store.get("bob") is None
    with store.unit_of_work():
        with store.unit_of_work():
            store.add("bob", is_admin=False, password_hash=None, now=NOW)
    assert store.get("bob") is not None


def test_an_inner_failure_rolls_back_the_outer_work(store):
    with pytest.raises(RuntimeError):
        with store.unit_of_work():
            store.update("alice", max_attempts=7)
            with store.unit_of_work():
                raise RuntimeError("inner")
    assert store.get("alice").max_attempts is None
    assert not store._conn().db.in_transaction
