"""The fleet audit's table (audit_events) for FleetAudit (audit.py), its only user:
the SQL lives here, run through the fleet store's `run` (statements.py), not in the
store's class. The hash chains themselves are migration 3 (store/pg_audit.py)."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from ..store import pg_audit
from .audit import Row
from .statements import Statements


class AuditEvents:
    """FleetAudit's AuditTable over the fleet database."""

    def __init__(self, db: Statements) -> None:
        self.db = db

    def add_audit(self, rows: list[Row]) -> None:
        """Append audit events (ts, host, event, user, fields): one statement per batch."""
        if rows:
            params = ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                      [r[3] for r in rows], [Jsonb(r[4]) for r in rows])
            self.db.run(lambda c: c.execute(
                'INSERT INTO audit_events (ts, host_name, event, "user", fields) '
                "SELECT * FROM unnest(%s::float8[], %s::text[], %s::text[], %s::text[], "
                "%s::jsonb[])", params).rowcount)

    def audit_events(self, user: str | None = None, since: float | None = None,
                     host: str | None = None, limit: int = 10000) -> list[Row]:
        """The newest `limit` events, oldest first: (ts, host, event, user, fields)."""
        params = {"user": user, "since": since, "host": host, "limit": limit}
        rows: list[tuple[Any, ...]] = self.db.run(lambda c: c.execute(
            'SELECT ts, host_name, event, "user", fields FROM (SELECT * FROM audit_events '
            'WHERE (%(user)s::text IS NULL OR "user" = %(user)s) '
            "AND (%(since)s::float8 IS NULL OR ts >= %(since)s) "
            "AND (%(host)s::text IS NULL OR host_name = %(host)s) "
            "ORDER BY id DESC LIMIT %(limit)s) newest ORDER BY ts, host_name",
            params).fetchall())
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def audit_verify(self) -> dict[str, Any]:
        """Recompute every host's hash chain (pg_audit.verify): what was edited or deleted."""
        return pg_audit.verify(lambda sql: self.db.run(lambda c: c.execute(sql).fetchall(),
                                                       long=True))

    def audit_hosts(self) -> list[str]:
        """The hosts that have written to the audit (each has a chain)."""
        rows: list[tuple[Any, ...]] = self.db.run(
            lambda c: c.execute(pg_audit.HOSTS, ()).fetchall())
        return [r[0] for r in rows]
