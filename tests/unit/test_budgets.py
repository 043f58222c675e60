"""The PAM socket's budgets (issue 20): who a requester is, the waiting budget
(transport/limits.py) and the fair queue of password checks (transport/fairqueue.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pam_jctotp.transport import limits
from pam_jctotp.transport.fairqueue import FairPool, TooManyChecks

# --- requesters -----------------------------------------------------------------


@pytest.mark.parametrize("rhost, uid, who", [
    ("203.0.113.9", 0, "rhost 203.0.113.9"),      # sshd: PAM as root
    ("", 1000, "uid 1000"),                      # su: the user's real uid
    ("myhost", 1000, "uid 1000 rhost myhost"),   # sudo may set PAM_RHOST for everyone
    ("", 0, "uid 0"),                            # login on a console
    ("203.0.113.9", None, "uid ? rhost 203.0.113.9"),   # a shim older than uid=
    ("", None, "uid ?"),
])
def test_requester(rhost, uid, who):
    assert limits.requester(rhost, uid) == who


def test_two_users_behind_one_rhost_set_by_the_program_are_two_requesters():
    assert limits.requester("myhost", 1000) != limits.requester("myhost", 1001)


# --- the plan --------------------------------------------------------------------


def test_pam_plan_from_the_descriptor_limit():
    big = limits.pam_plan(65536, 256)        # the unit's LimitNOFILE
    assert (big.working, big.waiting, big.per_requester) == (256, limits.WAITING_MOST,
                                                             limits.WAITING_PER_REQUESTER)
    small = limits.pam_plan(1024, 256)       # systemd's default soft limit
    assert 0 < small.waiting < 1024 - 256 and small.per_requester <= small.waiting // 4
    # Both PAM budgets, the control socket's tables and the daemon's files fit.
    control = limits.plan(1024, small.working + small.waiting)
    used = (small.working + small.waiting + control.users + control.root
            + limits.FILES_RESERVE + limits.ACCEPT_BURST)
    assert used <= 1024
    assert (control.users, control.root) == (limits.USERS, limits.ROOT)
    tiny = limits.pam_plan(100, 256)
    assert tiny.waiting == limits.WAITING_LEAST and tiny.per_requester >= 1


# --- the waiting budget ------------------------------------------------------------


def waiting(total: int, per: int) -> limits.Waiting:
    return limits.Waiting(limits.PamPlan(working=10, waiting=total, per_requester=per))


def test_a_requester_over_its_share_is_refused_its_newest():
    w = waiting(100, 3)
    assert [w.park("a", i) for i in range(3)] == [(None, "")] * 3
    refused, why = w.park("a", 3)
    assert refused == 3 and "a already has 3" in why
    assert w.count("a") == 3 and w.total == 3
    assert w.park("b", 10) == (None, "")        # another requester: not affected


def test_a_full_budget_refuses_the_heaviest_requesters_newest():
    w = waiting(6, 4)
    for i in range(3):
        w.park("heavy", f"h{i}")
    w.park("b", "b0")
    w.park("b", "b1")
    w.park("c", "c0")
    assert w.total == 6
    refused, why = w.park("fresh", "f0")          # a fresh login's prompt: it stays
    assert refused == "h2" and "refused the newest of heavy" in why
    assert (w.count("heavy"), w.count("fresh"), w.total) == (2, 1, 6)
    # Now heavy and b tie at 2: the one that got there last gives its newest.
    refused, _ = w.park("fresh2", "g0")
    assert refused == "h1"
    assert w.count("heavy") == 1 and w.total == 6


def test_the_heaviest_parking_one_more_is_refused_itself():
    w = waiting(4, 4)
    for i in range(3):
        w.park("heavy", i)
    w.park("b", "b0")
    refused, why = w.park("heavy", 3)             # it would be the heaviest: its newest
    assert refused == 3 and "heavy has the most (4)" in why
    assert w.count("heavy") == 3 and w.count("b") == 1


def test_a_tie_with_the_parking_requester_spares_its_fresh_prompt():
    w = waiting(2, 4)
    w.park("a", "a0")
    w.park("b", "b0")
    refused, _ = w.park("c", "c0")                # all at 1: someone else's newest goes
    assert refused in ("a0", "b0") and w.count("c") == 1


def test_remove_and_levels_stay_consistent():
    w = waiting(50, 10)
    for i in range(5):
        w.park("a", i)
    assert w.remove("a", 2) and not w.remove("a", 2) and not w.remove("zz", 1)
    for i in (0, 1, 3, 4):
        w.remove("a", i)
    assert w.total == 0 and not w.by and not w.levels


# --- the fair queue ---------------------------------------------------------------------


class Gate:
    """A check that blocks until released, recording the order checks ran in."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    def check(self, name: str) -> str:
        self.release.wait(10)
        with self.lock:
            self.order.append(name)
        return name


def test_requesters_take_turns():
    gate = Gate()
    with ThreadPoolExecutor(1) as pool:
        fair = FairPool(pool, workers=1, per_requester=100)
        first = fair.submit("spray", gate.check, "s0")   # takes the one worker
        time.sleep(0.05)
        futures = [fair.submit("spray", gate.check, f"s{i}") for i in range(1, 6)]
        futures += [fair.submit("real", gate.check, "r0"), fair.submit("other", gate.check, "o0")]
        gate.release.set()
        for f in [first, *futures]:
            f.result(10)
    # After the running one: one of each requester in turn, not the spray's five first.
    assert gate.order[:4] == ["s0", "s1", "r0", "o0"], gate.order
    assert gate.order[4:] == ["s2", "s3", "s4", "s5"]


def test_a_requesters_queue_is_bounded_and_the_extra_check_fails_at_once(caplog):
    gate = Gate()
    with ThreadPoolExecutor(1) as pool:
        fair = FairPool(pool, workers=1, per_requester=3)
        running = fair.submit("spray", gate.check, "s0")
        time.sleep(0.05)
        queued = [fair.submit("spray", gate.check, f"s{i}") for i in range(1, 4)]
        extra = [fair.submit("spray", gate.check, f"x{i}") for i in range(5)]
        real = fair.submit("real", gate.check, "r0")   # another requester: still queued
        for f in extra:
            assert isinstance(f.exception(0), TooManyChecks)
        assert not real.done()
        gate.release.set()
        assert real.result(10) == "r0" and [f.result(10) for f in queued] == ["s1", "s2", "s3"]
        running.result(10)
    refusals = [r for r in caplog.records if "password check refused" in r.getMessage()]
    assert len(refusals) == 1 and "spray" in refusals[0].getMessage()   # throttled


def test_never_more_tasks_in_the_pool_than_workers_and_a_cancelled_check_is_skipped():
    gate = Gate()
    with ThreadPoolExecutor(4) as pool:
        fair = FairPool(pool, workers=2, per_requester=100)
        futures = [fair.submit(f"r{i % 3}", gate.check, f"c{i}") for i in range(9)]
        time.sleep(0.05)
        assert fair._running == 2 and fair.queued() == 7
        assert futures[8].cancel()                    # its login failed closed meanwhile
        gate.release.set()
        for f in futures[:8]:
            f.result(10)
    assert "c8" not in gate.order and len(gate.order) == 8


def test_an_exception_reaches_the_waiter_and_frees_the_worker():
    def boom() -> None:
        raise ValueError("directory said no")

    with ThreadPoolExecutor(1) as pool:
        fair = FairPool(pool, workers=1)
        with pytest.raises(ValueError):
            fair.submit("a", boom).result(10)
        assert fair.submit("a", lambda: 7).result(10) == 7
        assert fair.submit("b", lambda x: x + 1, 1).result(10) == 2


def test_shutdown_cancels_the_queued_checks():
    gate = Gate()
    pool = ThreadPoolExecutor(1)
    fair = FairPool(pool, workers=1)
    fair.submit("a", gate.check, "a0")
    time.sleep(0.05)
    queued = fair.submit("a", gate.check, "a1")
    fair.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    gate.release.set()
    pool.shutdown(wait=True)
