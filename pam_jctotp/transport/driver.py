"""Runs a conversation to its end without ever blocking the event loop.

Each step (`conv.send(value)`: store calls, NSS lookups, audit writes,
useradd) runs in a worker thread of the caller's step pool; password checks
and hashes run in the bounded argon2 pool (19 MiB per worker). The loop only
carries frames.

Every step is bounded by a deadline. For a PAM call it is the shim's timeout
(HELLO `timeout=`, else the default) minus a margin, counted from the last
answer: a step that does not finish in time (a locked database, a dead
directory server) fails that login closed (StepTimeout -> AUTHINFO_UNAVAIL,
one log line), while the thread finishes on its own and the other logins,
on other threads, go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Any, Awaitable, Callable, TypeVar

from ..core.steps import (Conversation, Error, Info, Prompt, Result, SetPassword, Verdict,
                          VerifyPassword)
from ..directory import Directory
from .fairqueue import FairPool

T = TypeVar("T")

SHIM_TIMEOUT = 10     # the shim's default timeout= (seconds)
SETTLE = 10.0         # auditing a verdict once it was delivered (or not)

log = logging.getLogger("jctotpd")


class StepTimeout(Exception):
    """A conversation step did not finish before its deadline."""


def reply_budget(shim_timeout: int | None) -> float:
    """Seconds the daemon may spend between an answer and its next frame:
    safely below the shim's timeout, so the shim never gives up on us first."""
    t = float(shim_timeout or SHIM_TIMEOUT)
    return max(0.2, t - min(1.0, t * 0.25))


class Deadline:
    """The end of the current reply window (restarted after each answer)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.restart()

    def restart(self) -> None:
        self.at = time.monotonic() + self.seconds

    def left(self) -> float:
        return self.at - time.monotonic()


class Driver:
    def __init__(self, directory: Directory, argon2: FairPool) -> None:
        self.directory = directory
        self.argon2 = argon2

    async def call(self, pool: Executor, deadline: Deadline, fn: Callable[..., T],
                   *args: Any, on_late: Callable[[], None] | None = None) -> T:
        """fn(*args) in `pool`, awaited at most until the deadline."""
        future = pool.submit(fn, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future),
                                          max(0.0, deadline.left()))
        except asyncio.TimeoutError:
            if on_late is not None:
                future.add_done_callback(lambda _: on_late())
            raise StepTimeout(f"{getattr(fn, '__qualname__', fn)} took longer than "
                              f"{deadline.seconds:.1f}s") from None

    async def _settle(self, conv: Conversation, delivered: bool, pool: Executor,
                      close_late: Callable[[], None]) -> bool:
        """Tell the conversation whether its verdict arrived; True if that stalled."""
        try:
            after = await self.call(pool, Deadline(SETTLE), finish, conv, delivered,
                                    on_late=close_late)
        except StepTimeout as exc:
            log.error("after a verdict: %s (its audit event may be missing)", exc)
            return True
        except Exception:
            log.exception("after a verdict (its audit event may be missing)")
            return False
        if after is not None:
            log.error("a conversation went on after its verdict (%s)", type(after).__name__)
        return False

    async def drive(self, conv: Conversation, show: Callable[[Any], Awaitable[None]],
                    ask: Callable[[Prompt], Awaitable[str]], pool: Executor,
                    deadline: Deadline,
                    deliver: Callable[[Verdict | Result], Awaitable[bool]] | None = None,
                    requester: str = "control") -> Verdict | Result:
        """Run `conv` to its Verdict/Result, doing the I/O each step asks for.

        With `deliver`, the verdict is handed over by it and the conversation is
        then told whether that worked (`delivered = yield Verdict(...)`), so a
        grant is audited as such only once the peer has it. That epilogue has
        a deadline of its own (SETTLE) and, the peer having its answer, a
        fault in it is logged, not reported to the peer. Password checks queue as
        `requester` (fairqueue.py)."""
        argon2 = self.argon2.lane(requester)
        value: Any = None
        late = closed = False

        def close_late() -> None:
            conv.close()  # in the worker, once the late step has finished

        try:
            while True:
                try:
                    step = await self.call(pool, deadline, conv.send, value, on_late=close_late)
                except StepTimeout:
                    late = True
                    raise
                except StopIteration:
                    raise RuntimeError("conversation ended without a verdict") from None
                value = None
                if isinstance(step, (Verdict, Result)):
                    if deliver is not None:
                        late = await self._settle(conv, await deliver(step), pool, close_late)
                        closed = True  # finish closed it, in the same worker call
                    return step
                if isinstance(step, Prompt):
                    value = await ask(step)
                    deadline.restart()
                elif isinstance(step, (Info, Error)):
                    await show(step)
                elif isinstance(step, VerifyPassword):
                    value = await self.call(argon2, deadline, self.directory.verify_password,
                                            step.user, step.password)
                elif isinstance(step, SetPassword):
                    await self.call(argon2, deadline, self.directory.set_password,
                                    step.user, step.password, step.old)
                else:
                    raise TypeError(f"unknown conversation step {type(step).__name__}")
        finally:
            if not late and not closed:
                # The generator's cleanup may write (an abandoned login is audited
                # and its attempt given back): in a worker, like every step.
                await asyncio.wrap_future(pool.submit(conv.close))


def finish(conv: Conversation, delivered: bool) -> object | None:
    """Tell a finished conversation whether its verdict arrived, then close it (one
    worker call, not two); None once it ends. (StopIteration cannot cross into an
    asyncio future, so it ends here.)"""
    try:
        return conv.send(delivered)
    except StopIteration:
        return None
    finally:
        conv.close()
