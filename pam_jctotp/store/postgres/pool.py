"""Connections to the fleet database (part of store/postgres/): the pool, the
multi-host connect (InOrderConnection), the client-side deadlines and the outage
breaker's wiring (outage.py), units of work, and the sync thread's wake-ups
(Listener, or ChangePoller through PgBouncer). See __init__.py for the design.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from ...errors import StoreError, StoreUnavailable
from ..outage import Breaker, DeadlineExceeded, Deadlines, first_line

log = logging.getLogger("jctotpd.store")
# The pool logs every failed reconnect and discarded connection: during an
# outage that is a line a second. We log the outage once ourselves.
logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)

CONNECT_TIMEOUT = 3    # seconds for one connection attempt (unless the URI says)
PROBE_CONNECT_TIMEOUT = 2   # the probe's connect during an outage (libpq's smallest)
WAIT_TIMEOUT = 3.0     # seconds a step waits for a pooled connection; the shim waits 10 s
STATEMENT_DEADLINE = 2.0   # client-side: a login statement takes ms (p99 < 0.3 s at 50
#                            concurrent); past this the server is wedged: the call fails
LONG_DEADLINE = 60.0   # schema migration (waits for another host's) and `fleet import`
RECONNECT_TIMEOUT = 2.0  # the pool gives up a slot this fast, so a returning server is
#                          picked up by the next login instead of after a long back-off
# libpq's own detection of a peer gone from the network (idle pooled connections),
# unless the URI says otherwise; a frozen server is caught by the deadlines.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
              "keepalives_count": 3, "tcp_user_timeout": 10000}
CHANNEL = "jctotp_users"

# A standby (25006, read-only) or a server going down (57P01-57P03): the connection is
# closed, never reused, and the call counts as an outage (the breaker's probe finds
# the new primary). 57P0x are OperationalErrors already; 25006 is not.
_GONE = (pgerrors.ReadOnlySqlTransaction, pgerrors.AdminShutdown, pgerrors.CrashShutdown,
         pgerrors.CannotConnectNow)
_OUTAGE = (psycopg.OperationalError, PoolTimeout, DeadlineExceeded, *_GONE)
T = TypeVar("T")


# What a server says when it is up but will not let our role in: removed (dropped,
# NOLOGIN), a password replaced, a pg_hba.conf entry or certificate revoked.
_ROLE_REFUSED = re.compile(r"password authentication failed|is not permitted to log in|"
                           r"role \S+ does not exist|no pg_hba\.conf entry|"
                           r"certificate authentication failed|pg_hba\.conf rejects")


def role_refused(exc: BaseException) -> bool:
    return bool(_ROLE_REFUSED.search(str(exc)))


def describe(uri: str) -> str:
    """The URI without its query (which may name files): for log lines and doctor."""
    try:
        info = conninfo_to_dict(uri)
    except psycopg.ProgrammingError:
        return "(an unparsable database URI)"
    host = info.get("host", "localhost")
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{info.get('user', '')}@{host}{port}/{info.get('dbname', '')}"


def hosts_in_order(uri: str) -> list[str]:
    """A multi-host URI (host=a,b / port=p,q) as one conninfo per host, in order (each
    then read-write only: PostgresStore's target_session_attrs). One host: the URI."""
    params = conninfo_to_dict(uri)
    hosts = str(params.get("host", "")).split(",")
    if len(hosts) < 2:
        return [uri]
    ports = str(params.get("port", "")).split(",")
    addrs = str(params.get("hostaddr", "")).split(",")
    one: list[str] = []
    for n, host in enumerate(hosts):
        each = {**params, "host": host}
        each["port"] = ports[n] if len(ports) == len(hosts) else ports[0]
        if "hostaddr" in params:
            each["hostaddr"] = addrs[n] if len(addrs) == len(hosts) else addrs[0]
        one.append(make_conninfo("", **{k: v for k, v in each.items() if v != ""}))
    return one


class InOrderConnection(psycopg.Connection[Any]):
    """Every connection of ours (the pool's, the probe's, the listener's): the first
    host of the URI that takes a read-write one, else the last host's error, the same
    with any psycopg (3.1.7's multi-host connect predates 3.1.13's fixes, #674)."""

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
        last: psycopg.OperationalError | None = None
        for one in hosts_in_order(conninfo):
            try:
                return super().connect(one, **kwargs)
            except psycopg.OperationalError as exc:
                last = exc
        assert last is not None
        raise last


class Listener:
    """LISTEN on its own connection (not the pool's), for the fleet sync thread."""

    def __init__(self, uri: str, connect_timeout: int,
                 target_session_attrs: str = "read-write") -> None:
        self.uri = uri
        self.connect_timeout = connect_timeout
        self.target_session_attrs = target_session_attrs
        self.conn: psycopg.Connection[Any] | None = None
        # interrupt() writes here so a stop never waits out a long `wait`.
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def interrupt(self) -> None:
        """Wake a `wait` in another thread (the daemon is stopping)."""
        with contextlib.suppress(OSError):   # already woken (pipe full) or closed
            os.write(self._wake_w, b"x")

    def wait(self, timeout: float) -> bool:
        """True when something changed (or the connection is new: resync all); False after
        `timeout` quietly. StoreUnavailable when the connection is lost (reconnects next)."""
        try:
            if self.conn is None:
                self.conn = InOrderConnection.connect(
                    self.uri, autocommit=True, connect_timeout=self.connect_timeout,
                    target_session_attrs=self.target_session_attrs)
                self.conn.execute(f"LISTEN {CHANNEL}")
                return True
            ready = select.select([self.conn.fileno(), self._wake_r], [], [], timeout)[0]
            if self._wake_r in ready:
                return False  # interrupted: the caller checks whether to stop
            if not ready:
                return False
            self.conn.pgconn.consume_input()
            notified = False
            while self.conn.pgconn.notifies() is not None:
                notified = True
            if not notified:   # readable without a notification: the server said goodbye
                raise psycopg.OperationalError("the listening connection was closed")
            return True
        except (psycopg.Error, OSError) as exc:
            self.close()
            raise StoreUnavailable(f"fleet database listener: {exc}") from None

    def close(self) -> None:
        if self.conn is not None:
            with suppress(psycopg.Error):
                self.conn.close()
            self.conn = None


class _Counted(Protocol):
    def change_counter(self) -> int: ...


class ChangePoller:
    """The Listener's stand-in through PgBouncer's transaction pooling, where a LISTEN
    would hold a server connection per host (or be lost between transactions): every
    `interval` seconds one read of the change counter (migration 2), through the pool."""

    def __init__(self, store: _Counted, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.seen: int | None = None
        self._wake = threading.Event()

    def interrupt(self) -> None:
        self._wake.set()

    def wait(self, timeout: float) -> bool:
        """True when the counter moved since the last look (or at the first look);
        False after `timeout` or when interrupted. StoreUnavailable during an outage."""
        deadline = time.monotonic() + timeout
        while True:
            if self._wake.wait(max(0.0, min(self.interval, deadline - time.monotonic()))):
                self._wake.clear()
                return False
            counter = self.store.change_counter()
            if counter != self.seen:
                self.seen = counter
                return True
            if time.monotonic() >= deadline:
                return False

    def close(self) -> None:
        pass


class _Unit:
    """One thread's open unit of work: its connection and depth."""

    def __init__(self, conn: psycopg.Connection[Any], owner: int) -> None:
        self.conn = conn
        self.owner = owner
        self.depth = 0


class Connections:
    """The statements' runner, shared by PostgresStore's parts: a pooled connection (or
    this thread's unit of work), a deadline, an outage tripping the breaker."""

    uri: str
    where: str
    wait_timeout: float
    pool: ConnectionPool[Any]
    breaker: Breaker
    on_role_refused: Callable[[str], object] | None
    _kwargs: dict[str, Any]
    _units: dict[int, _Unit]
    _deadlines: Deadlines

    def _connect_error(self) -> str:
        """Why a fresh connection fails (the pool swallows the reason)."""
        try:
            InOrderConnection.connect(self.uri, connect_timeout=CONNECT_TIMEOUT,
                                      target_session_attrs=self._kwargs[
                                          "target_session_attrs"]).close()
        except psycopg.Error as exc:
            return first_line(exc)
        return "no connection free in the pool in time"

    # --- the outage state: one log line per outage (outage.py) -------------------------

    def _failed(self, exc: BaseException) -> StoreError:
        self._role_check(exc)   # before the caller falls back to a break-glass copy
        # PoolTimeout hides the cause: the probe's first connect says it instead.
        return self.breaker.trip(None if isinstance(exc, PoolTimeout) else first_line(exc))

    def _role_check(self, exc: BaseException) -> None:
        if self.on_role_refused is not None and role_refused(exc):
            self.on_role_refused(first_line(exc))

    def _probe_database(self) -> None:
        """One connection and one statement, both bounded: raises unless the database answers."""
        with InOrderConnection.connect(self.uri, **{**self._kwargs, "connect_timeout":
                                           PROBE_CONNECT_TIMEOUT}) as conn, \
                self._deadlines.guard(conn.pgconn.socket, STATEMENT_DEADLINE):
            conn.execute("SELECT 1")

    # --- connections ----------------------------------------------------------------

    def _checkout(self) -> psycopg.Connection[Any]:
        """A live connection from the pool; StoreUnavailable at once during an outage.
        An idle connection the server has closed (restart, admin kill) is readable:
        dropped without a round trip. The first one found so is a hint: one direct
        connection says at once whether the server is there at all (a stopped one
        refuses it), instead of waiting out the pool's reconnects."""
        self.breaker.check()
        probed = False
        for _ in range(self.pool.max_size + 1):
            conn: psycopg.Connection[Any] = self.pool.getconn(timeout=self.wait_timeout)
            try:
                readable = select.select([conn.pgconn.socket], [], [], 0)[0]
            except (OSError, ValueError, psycopg.OperationalError):
                readable = [True]
            if not readable:
                return conn
            conn.close()
            self.pool.putconn(conn)
            if not probed:
                probed = True
                self._probe_database()   # raises when the server is gone: an outage
        raise PoolTimeout("no live connection in the pool")

    def _timed(self, conn: psycopg.Connection[Any], work: Callable[[psycopg.Connection[Any]], T],
               deadline: float = STATEMENT_DEADLINE) -> T:
        try:
            with self._deadlines.guard(conn.pgconn.socket, deadline):
                return work(conn)
        except _GONE:
            conn.close()   # a standby or a server shutting down: never reuse it
            raise

    def _run(self, work: Callable[[psycopg.Connection[Any]], T],
             deadline: float = STATEMENT_DEADLINE) -> T:
        unit = self._units.get(threading.get_ident())
        try:
            if unit is not None:
                return self._timed(unit.conn, work, deadline)
            conn = self._checkout()
            try:
                return self._timed(conn, work, deadline)
            finally:
                self.pool.putconn(conn)   # a broken one is discarded (and replaced) by the pool
        except _OUTAGE as exc:
            raise self._failed(exc) from None
        except pgerrors.UniqueViolation:
            raise
        except psycopg.Error as exc:
            raise StoreError(f"fleet database error: {exc}") from None

    def run(self, work: Callable[[psycopg.Connection[Any]], T], long: bool = False) -> T:
        """`_run` for SQL kept with its only callers (fleet/audit_table.py, fleet/admin.py's
        import): the statement deadline, or (`long`) LONG_DEADLINE."""
        return self._run(work, LONG_DEADLINE if long else STATEMENT_DEADLINE)

    def _rowcount(self, sql: str, params: Any = ()) -> int:
        return self._run(lambda c: c.execute(sql, params).rowcount)

    def _one(self, sql: str, params: Any = ()) -> tuple[Any, ...] | None:
        return self._run(lambda c: c.execute(sql, params).fetchone())

    def _all(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        return self._run(lambda c: c.execute(sql, params).fetchall())

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """BEGIN … COMMIT/ROLLBACK on one connection kept for this thread.

        Re-entrant: an inner one joins the outer one. Ending on another thread
        than it began means a conversation yielded inside it: rolled back, refused.
        """
        me = threading.get_ident()
        unit = self._units.get(me)
        if unit is None:
            try:
                conn = self._checkout()
            except _OUTAGE as exc:
                raise self._failed(exc) from None
            unit = _Unit(conn, me)
            try:
                self._timed(conn, lambda c: c.execute("BEGIN"))
            except (psycopg.Error, DeadlineExceeded) as exc:
                self.pool.putconn(conn)
                raise self._failed(exc) if isinstance(exc, _OUTAGE) else \
                    StoreError(f"fleet database error: {exc}") from None
            self._units[me] = unit
        unit.depth += 1
        ok = False
        try:
            yield
            ok = True
        finally:
            unit.depth -= 1
            moved = threading.get_ident() != unit.owner
            if unit.depth == 0 or moved:
                self._units.pop(unit.owner, None)
                try:
                    end = "COMMIT" if ok and not moved else "ROLLBACK"
                    self._timed(unit.conn, lambda c: c.execute(end))
                except (psycopg.Error, DeadlineExceeded) as exc:
                    if isinstance(exc, _OUTAGE):
                        self._failed(exc)
                    if ok and not moved:
                        raise StoreError(f"fleet database error at commit: {exc}") from None
                finally:
                    self.pool.putconn(unit.conn)
            if moved:
                raise StoreError("a unit of work was held across a conversation step")
