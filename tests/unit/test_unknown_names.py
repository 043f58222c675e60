"""The counters of unknown names (store/unknown_names.py UnknownNames) over both
tables: this process's memory (MemoryNames) and the SQLite file every process of
the host shares (store/sqlite_names.py SharedUnknownNames, for pam_processes).
Driven as core/lockout.py drives them (`fail` below); the lockout subset itself
is in test_store_contract.py."""

from __future__ import annotations

import multiprocessing
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pam_jctotp.config import Config
from pam_jctotp.core.name_table import SLOTS, MemoryNames, NameTable, bucket_of
from pam_jctotp.core.policy import LOCK_REASON
from pam_jctotp.errors import StoreError
from pam_jctotp.model import UserRecord
from pam_jctotp.store.sqlite_names import SharedUnknownNames
from pam_jctotp.store.unknown_names import UnknownNames

T0 = 1_800_000_000.0
CFG = Config(max_attempts=5, fail_interval=900, unlock_after=600)


def make_table(kind: str, path: Path, size: int = 4096) -> NameTable:
    return MemoryNames(size) if kind == "memory" else SharedUnknownNames(path, size)


@pytest.fixture(params=["memory", "shared"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def counters(kind, tmp_path) -> UnknownNames:
    return UnknownNames(make_table(kind, tmp_path / "unknown-names.db"))


def record(counters: UnknownNames, name: str, now: float, cfg: Config = CFG) -> UserRecord:
    """The name's record, an expired lock lifted (as lockout.begin does first)."""
    counters.expire_lock(name, now, cfg.unlock_after)
    return counters.get(name)


def reserve(counters: UnknownNames, name: str, now: float, cfg: Config = CFG) -> int | None:
    """lockout.begin's calls: an expired lock lifted, then one attempt reserved."""
    if counters.get(name).locked_at is not None:
        counters.expire_lock(name, now, cfg.unlock_after)
    return counters.reserve_attempt(name, now, cfg.fail_interval, cfg.max_attempts)


def fail(counters: UnknownNames, name: str, now: float, cfg: Config = CFG) -> bool | None:
    """One wrong login of `name` (lockout.begin, then lockout.failed): None when
    refused, else whether it locked."""
    count = reserve(counters, name, now, cfg)
    if count is None:
        return None
    return count >= cfg.max_attempts and \
        counters.lock_if_exhausted(name, now, cfg.max_attempts, LOCK_REASON)


# --- the rule, the same over both tables ------------------------------------------

def test_the_limit_th_failure_locks_and_the_next_is_refused(counters):
    assert [fail(counters, "ghost", T0 + i) for i in range(7)] == \
        [False, False, False, False, True, None, None]
    rec = record(counters, "ghost", T0 + 10)
    assert rec.locked_at == T0 + 4 and rec.failed_count == 5 and rec.lock_reason


def test_names_count_apart(counters):
    for i in range(4):
        fail(counters, "ghost", T0 + i)
    assert fail(counters, "other", T0 + 5) is False
    assert fail(counters, "ghost", T0 + 6) is True


def test_a_lock_lifts_after_unlock_after(counters):
    for _ in range(5):
        fail(counters, "ghost", T0)
    assert record(counters, "ghost", T0 + 599).locked_at == T0
    rec = record(counters, "ghost", T0 + 600)
    assert rec.locked_at is None and rec.failed_count == 0
    assert fail(counters, "ghost", T0 + 601) is False


def test_unlock_after_zero_never_lifts(counters):
    cfg = Config(max_attempts=2, unlock_after=0)
    assert [fail(counters, "ghost", T0, cfg) for _ in range(2)] == [False, True]
    assert fail(counters, "ghost", T0 + 10**7, cfg) is None


def test_the_window_starts_over_after_fail_interval(counters):
    for _ in range(4):
        fail(counters, "ghost", T0)
    assert fail(counters, "ghost", T0 + 900) is False  # a new window: count 1
    assert record(counters, "ghost", T0 + 900).failed_count == 1


def test_a_reservation_given_no_failure_does_not_lock(counters):
    """Reserved at the limit but not failed (a success elsewhere): no lock is due yet,
    and the window's limit still refuses more checks."""
    for _ in range(4):
        fail(counters, "ghost", T0)
    assert reserve(counters, "ghost", T0)
    assert not reserve(counters, "ghost", T0)
    assert record(counters, "ghost", T0).locked_at is None


@pytest.mark.parametrize("name", ["o'brien", 'x"; DROP TABLE unknown_names; --', "zoë",
                                  "a" * 256, ""])
def test_names_are_kept_as_they_are(counters, name):
    for _ in range(5):
        fail(counters, name, T0)
    assert record(counters, name, T0).locked_at == T0
    assert record(counters, name + "x", T0).locked_at is None


# --- the bound ---------------------------------------------------------------------

def names_held(table: NameTable) -> list[str]:
    assert isinstance(table, (MemoryNames, SharedUnknownNames))
    return table.names()


def test_at_most_size_names_the_least_recently_seen_go_first(kind, tmp_path):
    """Below SLOTS names, one bucket: among rows alike, the least recently seen goes."""
    table = make_table(kind, tmp_path / "unknown-names.db", size=4)
    counters = UnknownNames(table)
    for n in range(4):
        fail(counters, f"ghost{n}", T0)
    fail(counters, "ghost0", T0)  # seen again: now the most recent
    for n in range(4, 7):
        fail(counters, f"ghost{n}", T0)
    assert names_held(table) == ["ghost0", "ghost4", "ghost5", "ghost6"]
    assert len(table) == 4  # type: ignore[arg-type]


def test_the_table_stays_bounded_over_many_names(kind, tmp_path):
    table = make_table(kind, tmp_path / "unknown-names.db", size=50)
    counters = UnknownNames(table)
    for n in range(400):
        fail(counters, f"ghost{n}", T0)
    held = names_held(table)
    assert len(held) == 3 * SLOTS  # 3 buckets of 16: at most 50
    assert held[-1] == "ghost399" and "ghost0" not in held


# --- what the bound never forgets (issue 20 item 4) ---------------------------------

def lock(counters: UnknownNames, name: str, now: float, cfg: Config = CFG) -> None:
    assert [fail(counters, name, now, cfg) for _ in range(cfg.max_attempts)][-1] is True


@pytest.mark.parametrize("unlock_after", [600, 0])
def test_a_spray_of_fresh_names_never_drops_a_live_lock(kind, tmp_path, unlock_after):
    """4,096 names, least recently seen dropped first: 4,200 fresh names made a
    locked unknown name answer "wrong password" again, where a real one stays locked."""
    cfg = Config(max_attempts=5, fail_interval=900, unlock_after=unlock_after)
    table = make_table(kind, tmp_path / "unknown-names.db", size=64)
    counters = UnknownNames(table)
    lock(counters, "ghost", T0, cfg)
    for n in range(1000):
        fail(counters, f"spray{n}", T0 + 1, cfg)
    assert record(counters, "ghost", T0 + 2, cfg).locked_at == T0
    assert fail(counters, "ghost", T0 + 3, cfg) is None
    assert len(names_held(table)) <= 64
    if unlock_after:  # and it lifts when its lock would have
        assert record(counters, "ghost", T0 + 600, cfg).locked_at is None


def test_a_row_a_fresh_one_would_equal_goes_before_one_still_counting(kind, tmp_path):
    table = make_table(kind, tmp_path / "unknown-names.db", size=4)
    counters = UnknownNames(table)
    fail(counters, "old", T0)                      # its window ends at T0 + 900
    for n in range(3):
        fail(counters, f"recent{n}", T0 + 500)
    record(counters, "old", T0 + 600)          # seen last, still counting
    fail(counters, "new", T0 + 950)                # "old"'s window is over: it says nothing
    assert sorted(names_held(table)) == ["new", "recent0", "recent1", "recent2"]
    fail(counters, "newer", T0 + 951)              # all counting: least recently seen
    assert sorted(names_held(table)) == ["new", "newer", "recent1", "recent2"]


def test_a_bucket_full_of_locks_shares_one_row_and_forgets_none(kind, tmp_path):
    """No slot to give: the names that find none count together (lock sooner,
    never later); the locks held stay; all of it lifts at unlock_after."""
    table = make_table(kind, tmp_path / "unknown-names.db", size=2)  # one bucket, 2 slots
    counters = UnknownNames(table)
    lock(counters, "a", T0)
    lock(counters, "b", T0)
    assert [fail(counters, "c", T0 + 1) for _ in range(6)] == \
        [False, False, False, False, True, None]
    assert record(counters, "d", T0 + 2).locked_at == T0 + 1  # shares c's row
    assert fail(counters, "d", T0 + 2) is None
    assert {n: record(counters, n, T0 + 3).locked_at for n in "ab"} == {"a": T0, "b": T0}
    assert sorted(names_held(table)) == ["a", "b"]
    assert fail(counters, "d", T0 + 601) is False  # a and b lifted: d gets a row of its own
    assert record(counters, "d", T0 + 602).failed_count == 1
    assert "d" in names_held(table)  # in place of an expired lock, not in the shared row


def test_buckets_are_keyed_per_table_and_the_file_keeps_its_key(tmp_path):
    names = [f"user{n}" for n in range(64)]
    one, two = MemoryNames(), MemoryNames()
    assert one.key != two.key
    assert [bucket_of(one.key, n, one.buckets) for n in names] != \
        [bucket_of(two.key, n, two.buckets) for n in names]
    path = tmp_path / "unknown-names.db"
    first = SharedUnknownNames(path)
    lock(UnknownNames(first), "ghost", T0)
    again = SharedUnknownNames(path)  # another process, or after a restart
    assert again.key == first.key and len(again.key) == 32
    assert record(UnknownNames(again), "ghost", T0 + 1).locked_at == T0


def test_a_version_1_file_is_replaced(tmp_path):
    path = tmp_path / "unknown-names.db"
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE unknown_names (name TEXT PRIMARY KEY, failed_count INTEGER,"
                      " fail_window_start REAL, locked_at REAL, seen INTEGER NOT NULL);"
                      "INSERT INTO unknown_names VALUES ('ghost', 5, 1, 1, 1);")
    old.close()
    counters = UnknownNames(SharedUnknownNames(path))
    assert fail(counters, "ghost", T0) is False


# --- shared by processes -----------------------------------------------------------

def _hammer(kind: str, path: str, tries: int, go: Any, out: Any) -> None:
    """One daemon process: two threads try the same unknown name `tries` times each."""
    counters = UnknownNames(make_table(kind, Path(path)))
    reserved, locks = [], []

    def worker() -> None:
        go.wait(10)
        for _ in range(tries):
            count = reserve(counters, "ghost", T0)
            if count is not None:
                reserved.append(1)
                locks.append(count >= CFG.max_attempts and counters.lock_if_exhausted(
                    "ghost", T0, CFG.max_attempts, LOCK_REASON))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((len(reserved), sum(locks), record(counters, "ghost", T0).locked_at))


def hammer_from_two_processes(kind: str, path: Path, tries: int = 10) -> list[tuple]:
    ctx = multiprocessing.get_context("fork")  # before any connection of its own
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(kind, str(path), tries, go, out))
             for _ in range(2)]
    for p in procs:
        p.start()
    go.set()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    return results


def test_two_processes_on_the_shared_table_lock_at_exactly_the_limit(tmp_path):
    """pam_processes: 2, 2 threads each, 40 concurrent guesses at one unknown name:
    5 are checked in all (max_attempts), exactly one failure locks, and both
    processes see the lock. (With a table per process, see the next test, an
    unknown name would take 10 guesses before "locked": an enumeration oracle.)"""
    results = hammer_from_two_processes("shared", tmp_path / "unknown-names.db")
    assert sum(r[0] for r in results) == CFG.max_attempts
    assert sum(r[1] for r in results) == 1
    assert all(r[2] is not None for r in results)


def test_tables_per_process_would_count_each_process_apart(tmp_path):
    """Why the shared table exists: in memory, each process has its own limit."""
    results = hammer_from_two_processes("memory", tmp_path / "unused")
    assert sum(r[0] for r in results) == 2 * CFG.max_attempts


def test_a_table_made_before_a_fork_reconnects_in_the_child(tmp_path):
    """The daemon may open it before it forks its extra processes: the child must not
    use the parent's connection (SQLite's rule), and the counts still add up."""
    table = SharedUnknownNames(tmp_path / "unknown-names.db")
    counters = UnknownNames(table)
    for _ in range(3):
        fail(counters, "ghost", T0)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()

    def child() -> None:
        out.put([fail(counters, "ghost", T0) for _ in range(3)])

    p = ctx.Process(target=child)
    p.start()
    assert out.get(timeout=30) == [False, True, None]
    p.join(10)
    assert p.exitcode == 0
    assert fail(counters, "ghost", T0) is None  # the parent's connection still works


# --- the file ----------------------------------------------------------------------

def test_the_file_is_0600(tmp_path):
    path = tmp_path / "unknown-names.db"
    fail(UnknownNames(SharedUnknownNames(path)), "ghost", T0)
    for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_a_locked_file_fails_the_reservation_closed_within_seconds(tmp_path):
    path = tmp_path / "unknown-names.db"
    counters = UnknownNames(SharedUnknownNames(path))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            reserve(counters, "ghost", T0)
        assert time.monotonic() - started < 5  # busy timeout 1 s: never a hang
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert reserve(counters, "ghost", T0)  # and works again once released


def test_an_unusable_path_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="cannot create"):
        SharedUnknownNames(tmp_path / "missing" / "unknown-names.db")


def test_close_closes_every_threads_connection_and_a_later_call_reopens(tmp_path):
    table = SharedUnknownNames(tmp_path / "unknown-names.db")
    counters = UnknownNames(table)
    thread = threading.Thread(target=fail, args=(counters, "ghost", T0))
    thread.start()
    thread.join()
    fail(counters, "ghost", T0)
    opened = list(table._all)
    table.close()
    for db in opened:
        with pytest.raises(sqlite3.ProgrammingError):
            db.execute("SELECT 1")
    assert record(counters, "ghost", T0).failed_count == 2


def _open_at(path: str, start: float, out) -> None:
    while time.time() < start:
        pass
    try:
        SharedUnknownNames(path).close()
        out.put("ok")
    except StoreError as exc:
        out.put(str(exc))


def test_processes_opening_a_new_file_at_once_all_get_it(tmp_path):
    """Switching a new file to WAL takes a lock SQLite's busy handler does not wait
    for: processes starting together once got "database is locked" (a CI run)."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(6):
        out = ctx.Queue()
        path = str(tmp_path / f"unknown-names-{round_}.db")
        start = time.time() + 0.3
        procs = [ctx.Process(target=_open_at, args=(path, start, out)) for _ in range(4)]
        for p in procs:
            p.start()
        got = [out.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(10)
        assert got == ["ok"] * 4, got
