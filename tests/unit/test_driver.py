"""The driver (pam_jctotp/transport/driver.py): steps run off the event loop, bounded.

A step that stalls (a locked database, a dead directory server) fails its
own conversation when the deadline passes; the loop and the other
conversations go on.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pam_jctotp.core.steps import Prompt, Verdict, VerifyPassword
from pam_jctotp.model import VerdictCode
from pam_jctotp.secret import Secret
from pam_jctotp.transport import driver as driver_mod
from pam_jctotp.transport.driver import Deadline, Driver, StepTimeout, reply_budget
from pam_jctotp.transport.fairqueue import FairPool


class Directory:
    def verify_password(self, name, password):
        return name == "alice" and password.reveal() == "pw"


async def _show(step):
    return None


async def _ask(step: Prompt) -> str:
    return "pw"


@pytest.mark.parametrize("shim_timeout", [None, 1, 2, 10, 60])
def test_the_reply_budget_stays_below_the_shims_timeout(shim_timeout):
    budget = reply_budget(shim_timeout)
    assert 0 < budget < (shim_timeout or 10)
    assert (shim_timeout or 10) - budget >= min(0.25, (shim_timeout or 10) / 4)


def test_a_stalled_step_fails_its_login_and_nothing_else():
    release = threading.Event()
    cleaned = threading.Event()
    loop_ticks = []

    def stalled():
        try:
            release.wait(10)  # a store call waiting on someone else's lock
            yield Verdict(VerdictCode.SUCCESS)
        finally:
            cleaned.set()

    def healthy():
        ok = yield VerifyPassword("alice", Secret((yield Prompt("Password: "))))
        yield Verdict(VerdictCode.SUCCESS if ok else VerdictCode.AUTH_ERR)

    async def ticker():
        while not release.is_set():
            loop_ticks.append(1)
            await asyncio.sleep(0.01)

    async def main():
        with ThreadPoolExecutor(4) as steps, ThreadPoolExecutor(1) as argon2:
            driver = Driver(Directory(), FairPool(argon2, 1))
            tick = asyncio.create_task(ticker())
            late = asyncio.create_task(driver.drive(stalled(), _show, _ask, steps,
                                                    Deadline(0.3)))
            await asyncio.sleep(0.05)
            verdict = await driver.drive(healthy(), _show, _ask, steps, Deadline(5))
            assert verdict == Verdict(VerdictCode.SUCCESS)  # while the other one stalls
            with pytest.raises(StepTimeout):
                await late
            ticks_during_stall = len(loop_ticks)
            release.set()
            await tick
            return ticks_during_stall

    assert asyncio.run(main()) > 10  # the loop kept running throughout
    assert cleaned.wait(5)  # the late conversation was closed once its step ended


# --- the verdict's delivery (issue 9 item 9) ----------------------------------------

def _granting(told: list):
    def conv():
        yield Prompt("Password: ")
        told.append((yield Verdict(VerdictCode.SUCCESS)))
    return conv()


@pytest.mark.parametrize("delivered", [True, False])
def test_the_conversation_learns_whether_its_verdict_was_delivered(delivered, monkeypatch):
    """However long the person took to answer: the epilogue's deadline starts
    when the verdict is out, not when the login began."""
    monkeypatch.setattr(driver_mod, "SETTLE", 0.2)
    told: list = []
    handed: list = []

    async def slow_ask(step):
        await asyncio.sleep(0.4)  # longer than SETTLE
        return "pw"

    async def deliver(verdict):
        handed.append(verdict)
        return delivered

    async def main():
        with ThreadPoolExecutor(2) as steps, ThreadPoolExecutor(1) as argon2:
            driver = Driver(Directory(), FairPool(argon2, 1))
            return await driver.drive(_granting(told), _show, slow_ask, steps, Deadline(5),
                                      deliver=deliver)

    assert asyncio.run(main()) == Verdict(VerdictCode.SUCCESS)
    assert handed == [Verdict(VerdictCode.SUCCESS)] and told == [delivered]


def test_without_deliver_a_finished_conversation_is_only_closed():
    told: list = []

    async def main():
        with ThreadPoolExecutor(2) as steps, ThreadPoolExecutor(1) as argon2:
            driver = Driver(Directory(), FairPool(argon2, 1))
            return await driver.drive(_granting(told), _show, _ask, steps, Deadline(5))

    assert asyncio.run(main()) == Verdict(VerdictCode.SUCCESS)
    assert told == []  # closed at its verdict: nothing audited as delivered
