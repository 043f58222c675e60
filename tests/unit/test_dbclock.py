"""A fleet's locks run on the database's clock (store/dbclock.py, issue 20 item 7)."""

from __future__ import annotations

import time

import pytest

from pam_jctotp.core import policy
from pam_jctotp.store import dbclock
from pam_jctotp.store.dbclock import DatabaseClock


def test_the_database_clock_is_carried_forward_by_boot_time_not_the_wall_clock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    boot = [100.0]
    monkeypatch.setattr(dbclock, "_boot", lambda: boot[0])
    clock = DatabaseClock(lambda: 5000.0)
    assert clock.now() is None                      # never read: the caller uses its own
    assert clock.sample() == 5000.0
    boot[0] += 30
    monkeypatch.setattr(time, "time", lambda: time.monotonic() + 1e9)   # `date -s`
    assert clock.now() == 5030.0


def test_locks_and_reads_use_the_store_s_clock_not_the_host_s(world) -> None:
    """A host whose clock is 1000 s ahead still sees a fleet lock made now (unlock_after
    900) as live, and would lift it only when the database's clock says so."""
    world.add("alice")
    shared = [world.now()]
    world.store.database_now = lambda fresh=False: shared[0]   # type: ignore[method-assign]
    world.store.update("alice", locked_at=world.acc.lock_now(), lock_reason="too many attempts")
    world.clock.set_skew(1000)                     # this host's clock: +1000 s
    rec = world.acc.get("alice")
    assert world.acc.lock_now() == shared[0] + world.clock.offset   # (the test offset too)
    assert world.acc.is_locked(rec)
    assert not policy.is_locked(rec, world.acc.now(), world.config)   # the host's view
    shared[0] += world.config.unlock_after + 1
    assert not world.acc.is_locked(rec)
