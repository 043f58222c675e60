"""The `Store` contract (pam_jctotp/store/__init__.py), run against every backend.

Each backend is a factory in BACKENDS. PostgreSQL runs in the full tier only
(JCTOTP_TEST_POSTGRES=1, set by scripts/test.sh): a private cluster
(tests/servers/postgres.py) and a fresh database per test. SQLite-only matters
(files, WAL, migrations) are in test_store_sqlite.py.

The lockout subset (`Lockout`) runs against the counters of names nobody has
too (store/unknown_names.py, over memory and over the shared SQLite file), so
an unknown name locks by the very rules of a real one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers.pgbouncer import bouncer, bouncer_server  # noqa: F401 - PgBouncer fixtures
from servers.postgres import pg, pg_cluster, pg_uri  # noqa: F401 - the postgres fixtures

from pam_jctotp.config import Config
from pam_jctotp.core import policy
from pam_jctotp.errors import StoreError
from pam_jctotp.model import MfaState
from pam_jctotp.store import Lockout, Store
from pam_jctotp.store.sqlite import SqliteStore
from pam_jctotp.store.sqlite_names import SharedUnknownNames
from pam_jctotp.store.unknown_names import UnknownNames

NOW = 1_700_000_000.0
THREADS = 24


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return SqliteStore(tmp_path / "jctotp.db")


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if os.environ.get("JCTOTP_TEST_POSTGRES") != "1":
        pytest.skip("PostgreSQL backend: full tier only (JCTOTP_TEST_POSTGRES=1)")
    from pam_jctotp.store.postgres import PostgresStore
    return PostgresStore(request.getfixturevalue("pg_uri"))


def _pgbouncer(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """PostgreSQL through PgBouncer in transaction pooling mode (issue 24), with a
    host's pool (database_pool_max 8) under the bouncer's low max_client_conn."""
    if os.environ.get("JCTOTP_TEST_POSTGRES") != "1":
        pytest.skip("PgBouncer: full tier only (JCTOTP_TEST_POSTGRES=1)")
    from pam_jctotp.store.postgres import PostgresStore
    uri = request.getfixturevalue("bouncer").through(request.getfixturevalue("pg_uri"))
    return PostgresStore(uri, pgbouncer=True, min_size=1, max_size=8)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Store]] = {
    "sqlite": _sqlite, "postgres": _postgres, "pgbouncer": _pgbouncer}


@pytest.fixture(params=sorted(BACKENDS))
def store(request, tmp_path) -> Iterator[Store]:
    s = BACKENDS[request.param](request, tmp_path)
    s.add("alice", is_admin=False, password_hash="h", now=NOW)
    yield s
    s.close()


LOCKOUTS: dict[str, Callable[[pytest.FixtureRequest, Path], Lockout]] = {
    **BACKENDS,
    "unknown-memory": lambda request, tmp_path: UnknownNames(),
    "unknown-shared": lambda request, tmp_path: UnknownNames(
        SharedUnknownNames(tmp_path / "unknown-names.db")),
}


@pytest.fixture(params=sorted(LOCKOUTS))
def lockout(request, tmp_path) -> Iterator[Lockout]:
    """The lockout subset: every store with its user alice, and the names nobody has."""
    s = LOCKOUTS[request.param](request, tmp_path)
    if isinstance(s, UnknownNames):
        yield s
        if isinstance(s.table, SharedUnknownNames):
            s.table.close()
        return
    s.add("alice", is_admin=False, password_hash="h", now=NOW)
    yield s
    s.close()


def race(n: int, work: Callable[[int], object]) -> list[object]:
    """Run work(i) in n threads released together by a barrier; every result, no errors."""
    barrier = threading.Barrier(n)
    results: list[object] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            barrier.wait()
            value = work(i)
            with lock:
                results.append(value)
        except BaseException as exc:  # noqa: B036 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


# --- users, attempts, locks, codes (each counter in one statement) ----------------------

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


def test_reserve_attempt_counts_up_to_the_limit_then_refuses(lockout):
    assert [lockout.reserve_attempt("alice", NOW + i, 900, 3) for i in range(5)] == \
        [1, 2, 3, None, None]
    assert lockout.get("alice").failed_count == 3


def test_reserve_attempt_on_an_unknown_user_is_none(store):
    assert store.reserve_attempt("ghost", NOW, 900, 3) is None


def test_the_window_expires_after_fail_interval(lockout):
    for i in range(3):
        lockout.reserve_attempt("alice", NOW + i, 900, 3)
    assert lockout.reserve_attempt("alice", NOW + 899, 900, 3) is None  # window opened at NOW
    assert lockout.reserve_attempt("alice", NOW + 900, 900, 3) == 1     # a new window
    assert lockout.get("alice").fail_window_start == NOW + 900


def test_lock_if_exhausted_locks_only_at_the_limit(lockout):
    lockout.reserve_attempt("alice", NOW, 900, 2)
    assert not lockout.lock_if_exhausted("alice", NOW, 2, policy.LOCK_REASON)
    lockout.reserve_attempt("alice", NOW, 900, 2)
    assert lockout.lock_if_exhausted("alice", NOW, 2, policy.LOCK_REASON)
    assert not lockout.lock_if_exhausted("alice", NOW, 2, policy.LOCK_REASON)  # already locked
    rec = lockout.get("alice")
    assert (rec.locked_at, rec.lock_reason) == (NOW, policy.LOCK_REASON)
    # a locked account gets no attempt at all, even in a fresh window
    assert lockout.reserve_attempt("alice", NOW + 10_000, 900, 2) is None


def test_reset_failures_and_unlock(lockout):
    lockout.reserve_attempt("alice", NOW, 900, 1)
    lockout.lock_if_exhausted("alice", NOW, 1, "r")
    lockout.reset_failures("alice")
    assert lockout.get("alice").locked_at == NOW  # a reset does not unlock
    assert lockout.unlock("alice")
    rec = lockout.get("alice")
    assert (rec.locked_at, rec.failed_count, rec.fail_window_start) == (None, 0, None)
    assert lockout.reserve_attempt("alice", NOW, 900, 1) == 1


def test_unlock_lifts_only_the_named_users_lock(store):
    """Issue 20 (a planted bug survived): an unlock without its `WHERE name = ?`
    unlocked every locked account. Two locked, one unlocked; the other keeps its
    lock and its counter, and a user never locked is not touched."""
    store.add("bob", is_admin=False, password_hash="h", now=NOW)
    store.add("carol", is_admin=False, password_hash="h", now=NOW)
    for name in ("alice", "bob"):
        for _ in range(2):
            store.reserve_attempt(name, NOW, 900, 2)
        assert store.lock_if_exhausted(name, NOW, 2, "too many")
    store.reserve_attempt("carol", NOW, 900, 2)
    assert store.unlock("alice")
    assert store.get("alice").locked_at is None
    bob, carol = store.get("bob"), store.get("carol")
    assert (bob.locked_at, bob.lock_reason, bob.failed_count) == (NOW, "too many", 2)
    assert (carol.locked_at, carol.failed_count, carol.fail_window_start) == (None, 1, NOW)
    assert store.reserve_attempt("bob", NOW + 10_000, 900, 2) is None


def test_expire_lock(store):
    store.update("alice", locked_at=NOW, lock_reason="r")
    assert not store.expire_lock("alice", NOW + 899, 900)
    assert not store.expire_lock("alice", NOW + 10**9, 0)  # 0 = only an admin unlocks
    assert store.expire_lock("alice", NOW + 900, 900)
    assert store.get("alice").locked_at is None


def test_expire_lock_lifts_a_lock_of_failures(lockout):
    """As test_expire_lock, for a lock the failures made (names nobody has no row
    to update)."""
    for _ in range(2):
        lockout.reserve_attempt("alice", NOW, 900, 2)
    assert lockout.lock_if_exhausted("alice", NOW, 2, policy.LOCK_REASON)
    assert not lockout.expire_lock("alice", NOW + 599, 600)
    assert not lockout.expire_lock("alice", NOW + 10**9, 0)  # 0 = only an admin unlocks
    assert lockout.expire_lock("alice", NOW + 600, 600)
    rec = lockout.get("alice")
    assert (rec.locked_at, rec.failed_count) == (None, 0)
    assert lockout.reserve_attempt("alice", NOW + 600, 900, 2) == 1


def test_accept_step_resets_the_counter_with_the_step_only(store):
    store.reserve_attempt("alice", NOW, 300, 5)
    assert not store.accept_step("alice", -1, reset_failures=True)   # not newer: replay
    assert store.get("alice").failed_count == 1                      # nothing reset
    assert store.accept_step("alice", 100, reset_failures=True)
    rec = store.get("alice")
    assert (rec.last_step, rec.failed_count, rec.fail_window_start) == (100, 0, None)


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


def test_a_failing_transaction_rolls_back_everything(store):
    with pytest.raises(StoreError), store.unit_of_work():
        store.update("alice", max_attempts=7)
        store.add("alice", is_admin=False, password_hash=None, now=NOW)
    assert store.get("alice").max_attempts is None


def test_nested_transactions_join_the_outer_one(store):
    with pytest.raises(RuntimeError), store.unit_of_work():
        store.update("alice", max_attempts=7)
        with store.unit_of_work():  # re-entrant: no second BEGIN
            store.add("bob", is_admin=False, password_hash=None, now=NOW)
        raise RuntimeError("after the inner one committed nothing yet")
    assert store.get("alice").max_attempts is None
    assert store.get("bob") is None
    with store.unit_of_work(), store.unit_of_work():
        store.add("bob", is_admin=False, password_hash=None, now=NOW)
    assert store.get("bob") is not None


def test_deleting_a_user_deletes_their_recovery_codes(store):
    store.replace_recovery_codes("alice", ["h1"])
    store.delete("alice")
    store.add("alice", is_admin=False, password_hash=None, now=NOW)
    assert store.recovery_codes_left("alice") == 0
    assert not store.use_recovery_code("alice", "h1", NOW)


def test_list_is_sorted_by_name(store):
    store.add("aaron", is_admin=True, password_hash=None, now=NOW)
    assert [r.name for r in store.list()] == ["aaron", "alice"]
    assert store.list()[0].is_admin


# --- the barrier races: N threads at once, as N logins in the daemon's worker pool -------

def test_one_code_is_accepted_exactly_once(store):
    results = race(THREADS, lambda i: store.accept_step("alice", 1000))
    assert results.count(True) == 1 and results.count(False) == THREADS - 1
    assert store.get("alice").last_step == 1000


def test_parallel_wrong_guesses_reserve_at_most_the_limit(lockout):
    limit = 5
    results = race(THREADS, lambda i: lockout.reserve_attempt("alice", NOW, 900, limit))
    assert sorted(r for r in results if r is not None) == list(range(1, limit + 1))
    assert results.count(None) == THREADS - limit
    locks = race(THREADS, lambda i: lockout.lock_if_exhausted("alice", NOW, limit, "r"))
    assert locks.count(True) == 1  # one lock event, however many failures end at once
    assert lockout.get("alice").failed_count == limit


def test_a_recovery_code_is_used_exactly_once(store):
    store.replace_recovery_codes("alice", ["h1"])
    results = race(THREADS, lambda i: store.use_recovery_code("alice", "h1", NOW))
    assert results.count(True) == 1
    assert store.recovery_codes_left("alice") == 0


def test_units_of_work_in_threads_never_share_a_transaction(store):
    """Each thread's unit of work is its own: one failing rolls back only its own work."""
    for i in range(8):
        store.add(f"u{i}", is_admin=False, password_hash=None, now=NOW)

    def work(i: int) -> bool:
        try:
            with store.unit_of_work():
                store.update(f"u{i}", max_attempts=i + 1)
                if i % 2:
                    raise RuntimeError("this one fails")
        except RuntimeError:
            return False
        return True

    assert sorted(race(8, work)) == [False] * 4 + [True] * 4
    assert {r.name: r.max_attempts for r in store.list() if r.name.startswith("u")} == {
        f"u{i}": (None if i % 2 else i + 1) for i in range(8)}


def test_a_unit_of_work_cannot_span_a_conversation_step(store):
    """A conversation that yields inside a unit of work and resumes on another worker
    thread is refused: the work must not be committed on a connection it was not begun on."""
    def conversation():
        with store.unit_of_work():
            store.update("alice", max_attempts=9)
            yield "prompt"

    conv = conversation()
    next(conv)
    failure: list[BaseException] = []

    def resume() -> None:
        try:
            next(conv, None)
        except BaseException as exc:  # noqa: B036
            failure.append(exc)

    t = threading.Thread(target=resume)
    t.start()
    t.join()
    assert len(failure) == 1 and isinstance(failure[0], StoreError)


def test_release_attempt_gives_one_reservation_back(lockout):
    """An abandoned login counts nothing (issue 12 bug 8)."""
    assert lockout.reserve_attempt("alice", NOW, 900, 5) == 1
    assert lockout.reserve_attempt("alice", NOW, 900, 5) == 2
    lockout.release_attempt("alice")
    assert lockout.get("alice").failed_count == 1
    lockout.release_attempt("alice")
    lockout.release_attempt("alice")  # never below zero
    assert lockout.get("alice").failed_count == 0


def test_flags_are_booleans_and_new_columns_round_trip(store):
    """--json shows true/false, never 1/0 (issue 11); email and enroll_now are stored."""
    store.add("boss", is_admin=True, password_hash=None, now=NOW)
    store.update("boss", email="boss@example.org", enroll_now=1, mfa_required=1)
    rec = store.get("boss")
    assert (rec.is_admin, rec.mfa_required, rec.enroll_now) == (True, True, True)
    assert all(type(v) is bool for v in (rec.is_admin, rec.mfa_required, rec.enroll_now))
    assert rec.email == "boss@example.org"
    assert store.get("alice").enroll_now is False and store.get("alice").email is None


# --- the read rules (core/policy.py) and the store's statements agree at each boundary ----

def test_policy_and_store_agree_when_a_lock_runs_out(store):
    """The lock is lifted at locked_at + unlock_after by both: the write path
    (expire_lock) and every read (policy.is_locked) — not a second apart."""
    cfg = Config(unlock_after=900)
    store.update("alice", locked_at=NOW, lock_reason="r")
    rec = store.get("alice")
    assert policy.is_locked(rec, NOW + 899.5, cfg)
    assert not store.expire_lock("alice", NOW + 899.5, 900)
    assert not policy.is_locked(rec, NOW + 900, cfg) and policy.lock_expired(rec, NOW + 900, cfg)
    assert store.expire_lock("alice", NOW + 900, 900)


def test_policy_and_store_agree_when_a_window_closes(lockout):
    cfg = Config(fail_interval=900)
    lockout.reserve_attempt("alice", NOW, 900, 5)
    assert policy.failures(lockout.get("alice"), NOW + 899.5, cfg) == 1
    assert policy.failures(lockout.get("alice"), NOW + 900, cfg) == 0
    assert lockout.reserve_attempt("alice", NOW + 900, 900, 5) == 1  # a new window, as read


def test_an_enrollment_period_ends_at_its_deadline(store):
    store.update("alice", mfa_required=1, enroll_deadline=NOW + 86400)
    rec = store.get("alice")
    assert policy.mfa_state(rec, NOW + 86399.5) is MfaState.PENDING
    assert policy.mfa_state(rec, NOW + 86400) is MfaState.EXPIRED


def test_release_attempt_leaves_a_locked_users_counter(lockout):
    for _ in range(2):
        lockout.reserve_attempt("alice", NOW, 900, 2)
    assert lockout.lock_if_exhausted("alice", NOW, 2, "too many")
    lockout.release_attempt("alice")  # a conversation abandoned while another locked
    assert lockout.get("alice").failed_count == 2


def test_a_second_lock_keeps_the_first(store):
    """A lock of a locked user changes nothing (a later lock would move
    locked_at, and with it when unlock_after lifts it)."""
    for _ in range(2):
        store.reserve_attempt("alice", NOW, 900, 2)
    assert store.lock_if_exhausted("alice", NOW, 2, "first")
    assert not store.lock_if_exhausted("alice", NOW + 500, 2, "second")
    rec = store.get("alice")
    assert (rec.locked_at, rec.lock_reason) == (NOW, "first")
