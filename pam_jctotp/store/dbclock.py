"""The fleet database's clock, as each host reads it (issue 20).

A fleet's locks and failure windows are shared by every host, so they run on
ONE clock, the database's: with each host's own, a host whose clock is ahead by
`unlock_after` finds every lock of the fleet run out and lifts it in the shared
database. Reading the database's clock costs a statement, so a process reads it
at start and then once a minute on a thread of its own (never on a login's
path), and carries it forward in between with CLOCK_BOOTTIME, which no step of
the host's wall clock moves (NTP, `date -s`). Through an outage it keeps
counting from the last reading (break-glass logins use it too).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from ..errors import StoreError

log = logging.getLogger("jctotpd.store")

REFRESH = 60.0   # seconds between two readings


def _boot() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class DatabaseClock:
    """`read()`: the database's clock now (one statement; StoreError when it does not
    answer)."""

    def __init__(self, read: Callable[[], float], refresh: float = REFRESH) -> None:
        self._read = read
        self.refresh = refresh
        self._ref: tuple[float, float] | None = None   # (database time, boot time) of a reading
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> float:
        """Read the database's clock now (and keep it as the reference)."""
        before = _boot()
        shared = self._read()
        self._ref = (shared, (before + _boot()) / 2)   # one assignment: never half a pair
        return shared

    def now(self) -> float | None:
        """The database's clock, from the last reading; None before the first."""
        ref = self._ref
        return None if ref is None else ref[0] + (_boot() - ref[1])

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="db-clock", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh):
            # an outage (logged once by the store): keep counting from the last
            with contextlib.suppress(StoreError):
                self.sample()

    def close(self) -> None:
        self._stop.set()
