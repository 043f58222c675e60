"""Password checks, queued fairly per requester in front of the argon2 workers (issue 20).

Every argon2 check (and the equal-cost dummy for unknown names) needs one of
a few workers (one per core). A FIFO in front of them let one source with 200
conversations make everyone else's check wait behind its 200: real logins
then failed closed at the shim's timeout. Here each requester (limits.requester:
the remote host, or the local uid) has a FIFO of its own, the workers take the
requesters' heads in turn (round-robin), and a requester's queue is bounded:
one more check is refused at once (TooManyChecks: the PAM server fails that
login closed after the fail_delay, with one throttled log line), never queued.
So a login from anyone else waits for at most one check per busy requester,
whatever one of them sends.

The pool never holds more tasks than it has workers: the order is decided
here, not in the executor's own queue. A check whose login was failed closed
meanwhile (the future cancelled) is skipped, not run.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from ..errors import JctotpError
from ..model import ExitCode
from ..printable import printable
from .limits import WAITING_PER_REQUESTER, Throttled

log = logging.getLogger("jctotpd")

# Checks one requester may have queued. Others never wait behind them (they take
# turns), so this only bounds what one source can make the daemon hold: as many
# as it may have conversations waiting at a prompt, so a burst that may wait
# there may also be checked.
PER_REQUESTER = WAITING_PER_REQUESTER

_Item = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...]]


class TooManyChecks(JctotpError):
    """A requester's queue of password checks is full: this one is refused."""

    exit_code = ExitCode.UNAVAILABLE


class FairPool:
    def __init__(self, pool: Executor, workers: int, per_requester: int | None = None) -> None:
        self.pool = pool
        self.workers = workers
        self.per_requester = per_requester or PER_REQUESTER
        self.throttled = Throttled(log)
        self._lock = threading.Lock()
        self._queues: dict[str, deque[_Item]] = {}
        self._turns: deque[str] = deque()   # requesters with a queued check, next first
        self._running = 0
        self._closed = False

    def submit(self, requester: str, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """fn(*args) on a worker in `requester`'s turn; a future that fails with
        TooManyChecks at once when its queue is full."""
        future: Future[Any] = Future()
        with self._lock:
            queue = self._queues.get(requester)
            if queue is not None and len(queue) >= self.per_requester:
                refused = True
            else:
                refused = False
                if queue is None:
                    queue = self._queues[requester] = deque()
                    self._turns.append(requester)
                queue.append((future, fn, args))
                self._dispatch()
        if refused:
            self.throttled.say("checks queued", f"password check refused (the login fails "
                               f"closed): {printable(requester)} already has "
                               f"{self.per_requester} checks queued")
            future.set_exception(TooManyChecks(f"{requester} has too many password checks "
                                               "queued; try again later"))
        return future

    def queued(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    def _dispatch(self) -> None:
        """Start the next checks, one requester's head at a time (under the lock)."""
        while self._running < self.workers and self._turns and not self._closed:
            requester = self._turns.popleft()
            queue = self._queues[requester]
            future, fn, args = queue.popleft()
            if queue:
                self._turns.append(requester)   # its next check: after the others' turn
            else:
                del self._queues[requester]
            if not future.set_running_or_notify_cancel():
                continue   # its login failed closed meanwhile: no work for nothing
            self._running += 1
            self.pool.submit(self._run, future, fn, args)

    def _run(self, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            result = fn(*args)
        except BaseException as exc:   # handed to the waiter, like an executor does
            self._done()
            future.set_exception(exc)
        else:
            self._done()
            future.set_result(result)

    def _done(self) -> None:
        """A worker is free: the next requester's turn (before this result's callbacks
        run, so a worker never idles while checks wait)."""
        with self._lock:
            self._running -= 1
            self._dispatch()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop: the queued checks are cancelled (they would never run), then the pool."""
        with self._lock:
            self._closed = True
            pending = [item[0] for q in self._queues.values() for item in q]
            self._queues.clear()
            self._turns.clear()
        for future in pending:
            future.cancel()
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)
