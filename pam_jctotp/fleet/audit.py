"""The fleet's audit trail: every event in this host's log (file + syslog) AND in the
fleet database with the host's `host_name`, so `jctotp audit` on any host shows
the whole fleet (`--host NAME` for one host).

The file stays the host's own record and is written first, in the login's
step, as on a single host. The database copy is written by one background
thread in batches (one statement per batch), so a login does not wait a round
trip for it; an event the database cannot take (an outage, logged once by the
store) stays in the file and syslog, and the thread moves on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Iterator, Protocol

from ..audit import AuditLog
from ..errors import StoreError

log = logging.getLogger("jctotpd.audit")

BATCH = 500          # events per statement at most
BACKLOG = 100_000    # events waiting at most; beyond, the database copy drops (file keeps)

Row = tuple[float, str, str, "str | None", dict[str, Any]]


class AuditTable(Protocol):
    def add_audit(self, rows: list[Row]) -> None: ...

    def audit_events(self, user: str | None = None, since: float | None = None,
                     host: str | None = None, limit: int = 10000) -> list[Row]: ...

    def audit_verify(self) -> dict[str, Any]: ...

    def audit_hosts(self) -> list[str]: ...


class FleetAudit:
    def __init__(self, local: AuditLog, table: AuditTable) -> None:
        self.local = local
        self.table = table
        self._queue: queue.Queue[Row | None] = queue.Queue(BACKLOG)
        self._thread = threading.Thread(target=self._drain, name="fleet-audit", daemon=True)
        self._thread.start()

    def write(self, event: str, user: str | None = None, *, now: float | None = None,
              **fields: Any) -> bool:
        written = self.local.write(event, user, now=now, **fields)
        try:
            self._queue.put_nowait((now or time.time(), self.local.host, event, user,
                                    {k: v for k, v in fields.items() if v not in (None, "")}))
        except queue.Full:
            pass  # in the file and syslog; the database copy is best effort
        return written

    def writable(self) -> bool:
        """The host's file decides (audit_failure: deny); the database copy is best effort."""
        return self.local.writable()

    def _drain(self) -> None:
        while True:
            first = self._queue.get()
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

    def _insert(self, rows: list[Row]) -> None:
        try:
            self.table.add_audit(rows)
        except StoreError:
            pass  # the store logged the outage once; the events are in the file
        finally:
            for _ in rows:
                self._queue.task_done()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until the queued events are in the database (tests, `audit` reads)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

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
