"""A fleet database outage, as the daemon lives through it (issue 13).

Two small parts, used by postgres.py:

- `Deadlines`: a client-side deadline for every statement. A server that is
  stopped or unreachable fails a statement by itself (connection refused, reset,
  keepalives, tcp_user_timeout), but a FROZEN one (SIGSTOPped, wedged, swapping)
  still has its kernel accept and ACK: libpq would wait forever. One thread
  watches the statements in flight and shuts down the socket of one that
  outlives its deadline; the statement then fails at once (and the pool
  discards the broken connection).
- `Breaker`: the outage state (pam_jctotp/offline.py's, which the LDAP directory
  shares). The first failure trips it and logs ONE line;
  while it is open every call fails at once (StoreUnavailable: the login fails
  closed, break-glass falls back to its copy) instead of waiting on the
  database again; a probe thread tries the database every PROBE_INTERVAL and,
  once it answers, closes the breaker and logs ONE "back" line. No restart.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import StoreUnavailable
from ..offline import Offline
from ..transport import probes

log = logging.getLogger("jctotpd.store")

TICK = 0.1             # seconds between two looks at the statements in flight
PROBE_INTERVAL = 1.0   # seconds between two probes of a database that is down


class DeadlineExceeded(Exception):
    """A statement got no answer within its deadline (its socket was shut down)."""


class Deadlines:
    """Client-side statement deadlines: one watcher thread for all connections."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[float, int]] = {}   # token -> (deadline, socket fd)
        self._expired: set[int] = set()
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        self._busy = threading.Event()       # set while anything is in flight
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, fd: int, seconds: float) -> Iterator[None]:
        """Run the body with the socket `fd` shut down if it takes longer than `seconds`;
        DeadlineExceeded (instead of the driver's broken-connection error) then."""
        token = next(self._tokens)
        with self._lock:
            self._running[token] = (time.monotonic() + seconds, fd)
            self._busy.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="db-deadlines",
                                                daemon=True)
                self._thread.start()
        try:
            yield
        except Exception:
            with self._lock:
                expired = token in self._expired
            if expired:
                raise DeadlineExceeded(f"no answer within {seconds:g} s") from None
            raise
        finally:
            with self._lock:   # under the lock: the watcher never cuts a socket reused since
                self._running.pop(token, None)
                self._expired.discard(token)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._busy.wait()
            if self._stop.wait(TICK):
                return
            now = time.monotonic()
            with self._lock:
                for token, (deadline, fd) in list(self._running.items()):
                    if now > deadline:
                        del self._running[token]
                        self._expired.add(token)
                        probes.shut_down(fd)
                if not self._running:
                    self._busy.clear()

    def close(self) -> None:
        self._stop.set()
        self._busy.set()


class Breaker:
    """Down or up, with one log line each way per outage and a probe in between.

    `probe()` raises when the database does not answer (bounded by its own
    timeouts); `what` names the database in the log lines.
    """

    def __init__(self, what: str, probe: Callable[[], None],
                 interval: float = PROBE_INTERVAL) -> None:
        self.what = what
        self.probe = probe
        self.interval = interval
        self.offline = Offline(log, what,
                               "fleet database {what} unavailable: {why}; logins fail closed "
                               "until it returns",
                               "fleet database {what} back after {seconds:.0f} s; logins are "
                               "served again")
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._prober: threading.Thread | None = None

    @property
    def down(self) -> bool:
        """Known to be down (for metrics: database_up, break-glass logins)."""
        return self.offline.down

    def check(self) -> None:
        """Fail at once while the database is known to be down (except in the probe)."""
        if self.offline.down and threading.current_thread() is not self._prober:
            raise StoreUnavailable(f"fleet database {self.what} unavailable")

    def trip(self, reason: str | None) -> StoreUnavailable:
        """A call failed for want of the database: the first one of an outage logs it
        (`reason` None: the probe's first attempt says why) and starts the probe."""
        with self._lock:
            if not self._closing.is_set() and self.offline.begin():
                self._prober = threading.Thread(target=self._probe_until_back, args=(reason,),
                                                name="db-probe", daemon=True)
                self._prober.start()
        return StoreUnavailable(f"fleet database {self.what} unavailable")

    def _say_down(self, reason: str) -> None:
        self.offline.say_down(reason)

    def _probe_until_back(self, reason: str | None) -> None:
        if reason is not None:
            self._say_down(reason)
        while not self._closing.is_set():
            try:
                self.probe()
                break
            except Exception as exc:   # any failure means: not back yet
                if reason is None:
                    reason = first_line(exc)
                    self._say_down(reason)
            self._closing.wait(self.interval)
        else:
            return
        if reason is None:   # the pool gave no connection, yet the probe got one at once
            self._say_down("no connection in time")
        self.offline.back()

    def close(self) -> None:
        self._closing.set()
        prober = self._prober
        if prober is not None and prober is not threading.current_thread():
            prober.join(timeout=5)


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
