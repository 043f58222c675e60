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
from pam_jctotp.transport.driver import Deadline, Driver, StepTimeout, reply_budget


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
            driver = Driver(Directory(), argon2)
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
