"""What fleet/'s own SQL (audit_table.py, admin.py's import) needs of the fleet store
(store/postgres/pool.py's Connections): a protocol, so the SQL stays with its only
callers without a cast to PostgresStore."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Statements(Protocol):
    def run(self, work: Callable[[Any], T], long: bool = False) -> T:
        """One step on a pooled connection (or this thread's unit of work), under the
        statement deadline (`long`: the long one); an outage fails it at once."""

    def unit_of_work(self) -> AbstractContextManager[None]:
        """BEGIN ... COMMIT/ROLLBACK on one connection kept for this thread."""
