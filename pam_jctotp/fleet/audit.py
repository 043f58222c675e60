"""The fleet's audit trail: every event in this host's log (file + syslog) AND in the
fleet database with the host's `host_name`, so `jctotp audit` on any host shows
the whole fleet (`--host NAME` for one host).

The file stays the host's own record and is written first, in the login's
step, as on a single host. The database copy is written by one background
thread in batches (one statement per batch), so a login does not wait a round
trip for it. An event the database cannot take (an outage, logged once by the
store) is spooled on the host (spool.py) and shipped, first and in order, when
the database answers again; while the database is known to be down, events go
to the spool at once (fsync'd: a kill -9 loses none). An event of a user this
host serves from its break-glass copy is marked `break_glass: true`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ..audit import AuditLog
from ..errors import StoreError
from .spool import Spool

log = logging.getLogger("jctotpd.audit")

BATCH = 500          # events per statement at most
BACKLOG = 100_000    # events waiting at most; beyond, the database copy drops (file keeps)
SHIP_EVERY = 2.0     # seconds between two tries to ship a spool while no event comes

Row = tuple[float, str, str, "str | None", dict[str, Any]]


class AuditTable(Protocol):
    def add_audit(self, rows: list[Row]) -> None: ...

    def audit_events(self, user: str | None = None, since: float | None = None,
                     host: str | None = None, limit: int = 10000) -> list[Row]: ...

    def audit_verify(self) -> dict[str, Any]: ...

    def audit_hosts(self) -> list[str]: ...


class FleetAudit:
    def __init__(self, local: AuditLog, table: AuditTable, spool: Spool | None = None,
                 down: Callable[[], bool] = lambda: False) -> None:
        """`spool`: where events wait for the database (None: dropped, file only);
        `down`: whether the database is known to be down now (the store's breaker)."""
        self.local = local
        self.table = table
        self.spool = spool
        self.down = down
        # set by the daemon when a break-glass copy exists: is `user` served from it now?
        self.break_glass: Callable[[str], bool] = lambda user: False
        # set by the daemon: did the database write this event's row itself (an admin
        # verb of a host role, store/pg_userwrites.py)? Then only the file gets it here.
        self.in_database: Callable[[str, str | None], bool] = lambda event, user: False
        self._queue: queue.Queue[Row | None] = queue.Queue(BACKLOG)
        self._thread = threading.Thread(target=self._drain, name="fleet-audit", daemon=True)
        self._thread.start()

    def write(self, event: str, user: str | None = None, *, now: float | None = None,
              **fields: Any) -> bool:
        if user is not None and self.break_glass(user):
            fields["break_glass"] = True
        written = self.local.write(event, user, now=now, **fields)
        if self.in_database(event, user):
            return written
        row = (now or time.time(), self.local.host, event, user,
               {k: v for k, v in fields.items() if v not in (None, "")})
        if self.spool is not None and self.down():
            self.spool.append([row])   # on disk before the login goes on
            return written
        # in the file and syslog; the database copy is best effort
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(row)
        return written

    def writable(self) -> bool:
        """The host's file decides (audit_failure: deny); the database copy is best effort."""
        return self.local.writable()

    def _drain(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=SHIP_EVERY)
            except queue.Empty:
                self._ship()
                continue
            if first is None:
                self._queue.task_done()
                return
            rows = [first]
            while len(rows) < BATCH:
                try:
                    row = self._queue.get_nowait()
                except queue.Empty:
                    break
                if row is None:
                    self._queue.task_done()
                    self._insert(rows)
                    return
                rows.append(row)
            self._insert(rows)

    def _ship(self) -> bool:
        """Ship the spool, if any; False while the database cannot take it."""
        if self.spool is None or not self.spool.pending():
            return True
        if self.down():
            return False
        try:
            self.spool.ship(self.table.add_audit)
        except StoreError:
            return False   # the store logged the outage once
        return True

    def _insert(self, rows: list[Row]) -> None:
        try:
            if not self._ship():   # older events first: they go after those in the spool
                raise StoreError("the spool waits for the database")
            self.table.add_audit(rows)
        except StoreError:
            # the store logged the outage once; the events are in the file (and spooled)
            if self.spool is not None:
                self.spool.append(rows)
        finally:
            for _ in rows:
                self._queue.task_done()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until the queued events are in the database (tests, `audit` reads)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        self._ship()   # an outage just over: its events before the newer ones are read

    def events(self, user: str | None = None, since: float | None = None,
               host: str | None = None) -> Iterator[dict[str, Any]]:
        self.flush()   # this host's own latest events first
        for ts, host_name, event, name, fields in self.table.audit_events(user, since, host):
            yield {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
                   "ts": round(ts, 3), "event": event, "user": name, "host": host_name,
                   **fields}

    def verify(self) -> dict[str, Any]:
        """Every host's hash chain recomputed by the database (store/pg_audit.py)."""
        self.flush()
        return self.table.audit_verify()

    def hosts(self) -> list[str]:
        self.flush()   # this host's first event makes it known
        return self.table.audit_hosts()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
        self.local.close()
