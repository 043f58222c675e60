"""The fleet's audit trail: every event in this host's log (file + syslog) AND in the
fleet database with the host's `host_name`, so `jctotp audit` on any host shows
the whole fleet (`--host NAME` for one host).

The file stays the host's own record: an event the database cannot take (an
outage, logged once by the store) is still in the file and in syslog.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Protocol

from ..audit import AuditLog
from ..errors import StoreError


class AuditTable(Protocol):
    def add_audit(self, ts: float, host: str, event: str, user: str | None,
                  fields: dict[str, Any]) -> None: ...

    def audit_events(self, user: str | None = None, since: float | None = None,
                     host: str | None = None, limit: int = 10000
                     ) -> list[tuple[float, str, str, str | None, dict[str, Any]]]: ...


class FleetAudit:
    def __init__(self, local: AuditLog, table: AuditTable) -> None:
        self.local = local
        self.table = table

    def write(self, event: str, user: str | None = None, *, now: float | None = None,
              **fields: Any) -> bool:
        written = self.local.write(event, user, now=now, **fields)
        try:
            self.table.add_audit(now or time.time(), self.local.host, event, user,
                                 {k: v for k, v in fields.items() if v not in (None, "")})
        except StoreError:
            pass  # in the file and syslog; the store logged the outage once
        return written

    def events(self, user: str | None = None, since: float | None = None,
               host: str | None = None) -> Iterator[dict[str, Any]]:
        for ts, host_name, event, name, fields in self.table.audit_events(user, since, host):
            yield {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
                   "ts": round(ts, 3), "event": event, "user": name, "host": host_name,
                   **fields}

    def close(self) -> None:
        self.local.close()
