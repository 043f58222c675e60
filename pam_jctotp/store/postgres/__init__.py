"""The PostgreSQL backend of `Store`: one database for a fleet of hosts (issue 13).

Same contract as sqlite.py, different SQL: every counter and watermark (the
attempt reservation, the lock, the last accepted time-step, single-use recovery
codes) changes in ONE statement with its condition in the WHERE clause, so
logins racing on many hosts at once are serialised by PostgreSQL's row lock.

Connections come from a psycopg_pool (3.1.7 API, Debian 12) used from the
daemon's worker threads: a statement outside a unit of work borrows a
connection (autocommit) and gives it back; a unit of work keeps one for its
thread until COMMIT/ROLLBACK. An outage (server down, unreachable, frozen,
pool exhausted) trips the breaker of outage.py: one log line, every call fails
at once (StoreUnavailable) until the probe sees the database back, one line
again. Every statement has a client-side deadline (STATEMENT_DEADLINE), so a
frozen server never holds a login; a broken connection is discarded by the pool.

At fleet scale (issue 24): through PgBouncer in transaction pooling mode
(`pgbouncer=True`: no server-side prepared statements, no LISTEN: the sync
thread polls a change counter instead, ChangePoller), and onto a promoted
standby: a multi-host URI is tried host by host in order, read-write only
(InOrderConnection: not left to the installed psycopg's multi-host handling;
Debian 12's 3.1.7 predates the fixes of 3.1.13, psycopg #674).
No statement is ever retried: a failure fails the login closed (see README,
"Failover").
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import select
import threading
import time
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterable, Iterator, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import StoreError, StoreUnavailable
from ..model import UserRecord
from . import SELECT_USERS as _SELECT
from . import USER_COLUMNS
from . import pg_audit, pg_codecheck, pg_hosts, pg_policy
from . import record as _record
from .dbclock import DatabaseClock
from .outage import Breaker, DeadlineExceeded, Deadlines, first_line

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
SCHEMA_LOCK = 0x6a63746f  # advisory lock id ("jcto"): one host migrates at a time

# Each entry upgrades the schema by one version (jctotp_meta 'schema_version').
# Column types mirror sqlite.py (0/1 integers for flags, float seconds for times),
# so the one core writes the same values to both.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE users (
        name              TEXT PRIMARY KEY,
        is_admin          INTEGER NOT NULL DEFAULT 0,
        password_hash     TEXT,
        mfa_required      INTEGER NOT NULL DEFAULT 0,
        enroll_deadline   DOUBLE PRECISION,
        totp_secret       BYTEA,
        pending_secret    BYTEA,
        last_step         BIGINT NOT NULL DEFAULT -1,
        failed_count      INTEGER NOT NULL DEFAULT 0,
        fail_window_start DOUBLE PRECISION,
        locked_at         DOUBLE PRECISION,
        lock_reason       TEXT,
        max_attempts      INTEGER,
        created_at        DOUBLE PRECISION NOT NULL,
        enrolled_at       DOUBLE PRECISION,
        email             TEXT,
        enroll_now        INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE recovery_codes (
        "user"    TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        code_hash TEXT NOT NULL,
        used_at   DOUBLE PRECISION,
        PRIMARY KEY ("user", code_hash)
    );
    CREATE TABLE audit_events (
        id        BIGSERIAL PRIMARY KEY,
        ts        DOUBLE PRECISION NOT NULL,
        host_name TEXT NOT NULL,
        event     TEXT NOT NULL,
        "user"    TEXT,
        fields    JSONB NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_events_ts ON audit_events (ts);
    -- Every host keeps host-local copies current (lock markers, Linux accounts,
    -- break-glass secrets): a NOTIFY when a user comes, goes, or changes lock or keys.
    CREATE FUNCTION jctotp_users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('jctotp_users', '');
        RETURN NULL;
    END $$;
    CREATE TRIGGER users_added_or_removed AFTER INSERT OR DELETE ON users
        FOR EACH STATEMENT EXECUTE FUNCTION jctotp_users_changed();
    CREATE TRIGGER users_lock_or_keys_changed AFTER UPDATE ON users FOR EACH ROW
        WHEN (OLD.locked_at IS DISTINCT FROM NEW.locked_at
              OR OLD.totp_secret IS DISTINCT FROM NEW.totp_secret
              OR OLD.password_hash IS DISTINCT FROM NEW.password_hash)
        EXECUTE FUNCTION jctotp_users_changed();
    """,
    # 2 (issue 24): a change counter for hosts that cannot LISTEN (through PgBouncer in
    # transaction mode). Bumped in the same transaction as the change, so a poller
    # never sees it before the change itself. Every unit of work touches one user,
    # so the lock order is always user row, then this row: no deadlock.
    """
    CREATE TABLE jctotp_changes (id INTEGER PRIMARY KEY CHECK (id = 1),
                                 counter BIGINT NOT NULL);
    INSERT INTO jctotp_changes VALUES (1, 0);
    CREATE OR REPLACE FUNCTION jctotp_users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('jctotp_users', '');
        UPDATE jctotp_changes SET counter = counter + 1 WHERE id = 1;
        RETURN NULL;
    END $$;
    """,
    pg_audit.MIGRATION,   # 3: hash-chained, append-only audit (issue 22)
    pg_hosts.MIGRATION,   # 4: a role per host (issue 22)
    pg_policy.MIGRATION,  # 5: the fleet's policy (issue 21)
    pg_codecheck.migration(),   # 6: codes checked in the database, keys out of reach (22)
]
CHANNEL = "jctotp_users"

# The statements of a login's path, named: bench/pg_async_vs_threads.py runs the same
# text on psycopg's event-loop API. Each is ONE statement, its condition in WHERE.
GET_USER = f"{_SELECT} WHERE name = %s"
RESERVE_ATTEMPT = """
    UPDATE users SET
      failed_count = CASE WHEN fail_window_start IS NULL
                            OR fail_window_start <= %(start)s
                          THEN 1 ELSE failed_count + 1 END,
      fail_window_start = CASE WHEN fail_window_start IS NULL
                                 OR fail_window_start <= %(start)s
                               THEN %(now)s ELSE fail_window_start END
    WHERE name = %(name)s AND locked_at IS NULL
      AND (fail_window_start IS NULL OR fail_window_start <= %(start)s
           OR failed_count < %(limit)s)
    RETURNING failed_count
    """
ACCEPT_STEP = "UPDATE users SET last_step = %s WHERE name = %s AND last_step < %s"
ACCEPT_STEP_AND_RESET = ("UPDATE users SET last_step = %s, failed_count = 0, "
                         "fail_window_start = NULL WHERE name = %s AND last_step < %s")
RESET_FAILURES = ("UPDATE users SET failed_count = 0, fail_window_start = NULL WHERE name = %s "
                  "AND (failed_count <> 0 OR fail_window_start IS NOT NULL)")

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


def _execute(sql: str, conn: psycopg.Connection[Any]) -> Any:
    """A script of many statements: no parameters, so one simple query."""
    return conn.execute(sql.encode())


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
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # already woken (pipe full) or closed

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
            try:
                self.conn.close()
            except psycopg.Error:
                pass
            self.conn = None


class ChangePoller:
    """The Listener's stand-in through PgBouncer's transaction pooling, where a LISTEN
    would hold a server connection per host (or be lost between transactions): every
    `interval` seconds one read of the change counter (migration 2), through the pool."""

    def __init__(self, store: "PostgresStore", interval: float) -> None:
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


class PostgresStore:
    """The fleet store. `key` (the key's check value, the key file's name): verify it
    against the database before serving. `serving` (jctotpd): when the database does
    not answer at start, start anyway with the outage known (every call fails at
    once: break-glass serves its group from the host's copy); the probe checks the
    schema and the key before the first call is served."""

    def __init__(self, uri: str, *, max_size: int = 24, min_size: int = 2,
                 wait_timeout: float = WAIT_TIMEOUT, create: bool = True,
                 key: tuple[str, str] | None = None, serving: bool = False,
                 unseal: Callable[[bytes, str], bytes] | None = None,
                 pgbouncer: bool = False, sync_interval: float = 2.0) -> None:
        self.uri = uri
        self.pgbouncer = pgbouncer
        self.sync_interval = sync_interval
        self.where = describe(uri)
        self.wait_timeout = wait_timeout
        try:
            params = conninfo_to_dict(uri)
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"database URI is not a libpq URI: {exc}") from None
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = CONNECT_TIMEOUT
        kwargs.update({k: v for k, v in KEEPALIVES.items() if k not in params})
        # Never a connection to a read-only server (a standby behind a stale endpoint,
        # or a host of a multi-host URI not promoted yet): libpq refuses it at connect,
        # so neither the pool nor the probe keeps one (unless the URI says otherwise).
        kwargs.setdefault("target_session_attrs", params.get("target_session_attrs",
                                                             "read-write"))
        if pgbouncer:
            # transaction pooling: the next statement may run on another server
            # connection, which never saw the PREPARE
            kwargs["prepare_threshold"] = None
        self._kwargs = kwargs
        self._units: dict[int, _Unit] = {}
        self._deadlines = Deadlines()
        self.breaker = Breaker(self.where, self._probe)
        self.expected_key_check: str | None = None  # set by verify_key
        self._key = key
        # the daemon's (who holds the key): opens a key sealed before migration 5
        self.unseal = unseal
        # the config's (totp_digits, totp_period, totp_window), for doctor
        self.expected_rule: tuple[int, int, int] | None = None
        self._ready = False        # schema and key checked: calls may be served
        self._serving = serving
        # locks and failure windows run on the database's clock (dbclock.py)
        self.clock = DatabaseClock(self._clock_reading)
        self._refused: str | None = None   # why the returning database was refused
        # called (from the probe) when the server answers but refuses our role: the
        # host was removed from the fleet, or its password replaced (issue 22)
        self.on_role_refused: Callable[[str], object] | None = None
        self.pool: ConnectionPool[Any] = ConnectionPool(
            uri, open=False, kwargs=kwargs, min_size=min_size, max_size=max_size,
            timeout=wait_timeout, name="jctotp", connection_class=InOrderConnection,
            reconnect_timeout=RECONNECT_TIMEOUT)
        if serving:
            self.pool.open(wait=False)
            try:
                self._probe_database()
            except (psycopg.Error, DeadlineExceeded, OSError) as exc:
                self.breaker.trip(f"{first_line(exc)} (at start: the schema and the key "
                                  "are checked when it answers)")
                return
        else:
            try:
                self.pool.open(wait=True, timeout=CONNECT_TIMEOUT + 1)
            except PoolTimeout:
                self.close()
                raise StoreError(f"cannot reach the fleet database {self.where} "
                                 f"({self._connect_error()})") from None
        try:
            self._get_ready(create)
        except StoreError:
            self.close()
            raise

    def _get_ready(self, create: bool = False) -> None:
        self.migrate(create)
        if self._key is not None:
            self.verify_key(*self._key)
        if self.unseal is not None:   # keys of before migration 5 (the owner has the key)
            self.unseal_legacy(self.unseal)
        self.clock.sample()
        if self._serving:
            self.clock.start()
        self._ready = True

    def database_now(self, fresh: bool = False) -> float | None:
        return self.clock.sample() if fresh else self.clock.now()

    def _clock_reading(self) -> float:
        row = self._one("SELECT extract(epoch FROM clock_timestamp())::float8")
        assert row is not None
        return float(row[0])

    def verify_key(self, check: str, key_file: str) -> None:
        """StoreError unless the database's key check value is `check` (the key file's)."""
        self.expected_key_check = check
        stored = self.meta("key_check")
        if stored is None:
            raise StoreError(f"the fleet database {self.where} has no key check: "
                             "run `jctotp fleet init` on the first host")
        if not hmac.compare_digest(stored, check):
            raise StoreError(f"key file {key_file} is not the key of the fleet database "
                             f"{self.where} (key check mismatch): copy secret_key_file from "
                             "a host of the fleet")

    def _connect_error(self) -> str:
        """Why a fresh connection fails (the pool swallows the reason)."""
        try:
            InOrderConnection.connect(self.uri, connect_timeout=CONNECT_TIMEOUT,
                                      target_session_attrs=self._kwargs[
                                          "target_session_attrs"]).close()
        except psycopg.Error as exc:
            return first_line(exc)
        return "no connection free in the pool in time"

    def close(self) -> None:
        self.clock.close()
        self.breaker.close()
        self._deadlines.close()
        self.pool.close()

    def listener(self) -> Listener | ChangePoller:
        if self.pgbouncer:
            return ChangePoller(self, self.sync_interval)
        return Listener(self.uri, CONNECT_TIMEOUT, self._kwargs["target_session_attrs"])

    def fleet_policy(self) -> list[tuple[str, Any, float, str]]:
        """The fleet's policy rows (key, value as JSON, set_at, set_by): pg_policy.py."""
        return [(r[0], r[1], float(r[2]), r[3]) for r in self._all(pg_policy.ROWS)]

    def set_fleet_policy(self, key: str, value: Any, actor: str) -> Any:
        """Store one policy key (None: remove it); returns the value it replaced."""
        row = self._one(pg_policy.SET, (key, None if value is None else Jsonb(value), actor))
        return row[0] if row else None

    def change_counter(self) -> int:
        row = self._one("SELECT counter FROM jctotp_changes WHERE id = 1")
        return int(row[0]) if row else 0

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
                                           PROBE_CONNECT_TIMEOUT}) as conn:
            with self._deadlines.guard(conn.pgconn.socket, STATEMENT_DEADLINE):
                conn.execute("SELECT 1")

    def _probe(self) -> None:
        """The breaker's probe (its thread may use the store while it is down). A daemon
        that started during the outage checks the schema and the key first: a database
        that answers with a wrong key stays refused (said once; a restart re-reads)."""
        try:
            self._probe_database()
        except psycopg.OperationalError as exc:
            self._role_check(exc)
            raise
        if self._ready:
            return
        try:
            self._get_ready()
        except StoreUnavailable:
            raise
        except StoreError as exc:
            if self._refused is None:
                self._refused = str(exc)
                log.error("fleet database %s answers but is refused: %s; logins fail closed "
                          "until jctotpd is restarted with that fixed", self.where, exc)
            raise

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

    # --- schema and fleet metadata -------------------------------------------------------

    def schema_version(self) -> int | None:
        """The schema version, or None when the database has no jctotp schema yet."""
        row = self._one("SELECT to_regclass('jctotp_meta') IS NOT NULL")
        if not row or not row[0]:
            return None
        row = self._one("SELECT value FROM jctotp_meta WHERE key = 'schema_version'")
        return int(row[0]) if row else 0

    def migrate(self, create: bool) -> int:
        """Bring the schema up to date (under an advisory lock: hosts start together)."""
        with self.unit_of_work():
            # another host may be migrating: wait for its lock longer than for a login
            self._run(lambda c: c.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,)),
                      LONG_DEADLINE)
            version = self.schema_version()
            if version is None:
                if not create:
                    raise StoreError(f"the fleet database {self.where} has no jctotp schema; "
                                     "run `jctotp fleet init` on the first host")
                self._rowcount("CREATE TABLE jctotp_meta (key TEXT PRIMARY KEY, "
                               "value TEXT NOT NULL)")
                self._rowcount("INSERT INTO jctotp_meta VALUES ('schema_version', '0')")
                version = 0
            if version > len(MIGRATIONS):
                raise StoreError(f"the fleet database {self.where} has schema version "
                                 f"{version}, newer than this jctotpd understands "
                                 f"({len(MIGRATIONS)}); upgrade jctotpd")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                # no parameters: one simple query, many statements
                try:
                    self._run(partial(_execute, script), LONG_DEADLINE)
                except StoreError as exc:   # e.g. a host role (issue 22): not the owner
                    raise StoreError(f"cannot upgrade the fleet schema of {self.where} to "
                                     f"version {number}: {exc}; run `jctotp fleet init "
                                     "--admin-database URI` (as the schema's owner) once"
                                     ) from None
                self._rowcount("UPDATE jctotp_meta SET value = %s WHERE key = "
                               "'schema_version'", (str(number),))
        return len(MIGRATIONS)

    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM jctotp_meta WHERE key = %s", (key,))
        return row[0] if row else None

    def claim_meta(self, key: str, value: str) -> str:
        """Store `value` unless the key has one; returns the value now stored (one statement)."""
        row = self._one(
            "WITH ins AS (INSERT INTO jctotp_meta VALUES (%(k)s, %(v)s) ON CONFLICT DO NOTHING "
            "RETURNING value) SELECT value FROM ins UNION ALL "
            "SELECT value FROM jctotp_meta WHERE key = %(k)s", {"k": key, "v": value})
        assert row is not None
        return str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        """As the schema's owner (`jctotp fleet rotate-key`): set, or delete with None.
        The hosts' syncs are woken, as by a user's change (a moved key check, a key
        handed off: they take it now, not at the next resync)."""
        with self.unit_of_work():
            if value is None:
                self._rowcount("DELETE FROM jctotp_meta WHERE key = %s", (key,))
            else:
                self._rowcount("INSERT INTO jctotp_meta VALUES (%s, %s) ON CONFLICT (key) "
                               "DO UPDATE SET value = EXCLUDED.value", (key, value))
            self._one("SELECT pg_notify('jctotp_users', '')")
            self._rowcount("UPDATE jctotp_changes SET counter = counter + 1 WHERE id = 1")

    def meta_like(self, prefix: str) -> list[str]:
        return [r[0] for r in self._all("SELECT key FROM jctotp_meta WHERE starts_with(key, %s)",
                                        (prefix,))]

    def reseal(self, name: str, column: str, old: bytes, new: bytes) -> bool:
        """Replace one sealed secret only if it is still `old` (an enrollment or reset
        in between wins; the caller reads it again): one statement, no lock held."""
        if column not in ("totp_secret", "pending_secret"):
            raise ValueError(column)
        return self._rowcount(f"UPDATE users SET {column} = %s WHERE name = %s "
                              f"AND {column} = %s", (new, name, old)) == 1

    def health(self) -> list[tuple[str, str]]:
        """For `jctotp doctor`: the database, its schema version, the key check."""
        try:
            row = self._one("SELECT current_setting('server_version'), "
                            "(SELECT value FROM jctotp_meta WHERE key = 'schema_version'), "
                            "(SELECT value FROM jctotp_meta WHERE key = 'key_check')")
        except StoreError as exc:
            said = str(exc)   # StoreUnavailable names the database already
            return [("fail", said if said.startswith("fleet database") else
                     f"fleet database: {said}")]
        assert row is not None
        server, version, check = row
        found = [("ok", f"fleet database {self.where} (PostgreSQL {server})"),
                 ("ok" if version == str(len(MIGRATIONS)) else "fail",
                  f"fleet schema version {version} (this jctotpd: {len(MIGRATIONS)})")]
        if self.expected_key_check is None:
            found.append(("warn", "key check: not verified by this process"))
        elif check == self.expected_key_check:
            found.append(("ok", "key check: this host's key file is the fleet's key"))
        else:
            found.append(("fail", "key check: this host's key file is NOT the fleet's key"))
        if self.expected_rule is not None and version == str(len(MIGRATIONS)):
            rule = self.totp_rule()   # the database checks the codes with its own rule
            found.append(("ok", "TOTP rule: the config's is the database's") if rule ==
                         self.expected_rule else
                         ("fail", "TOTP rule: the database checks codes with totp_digits "
                          f"{rule[0]}, totp_period {rule[1]}, totp_window {rule[2]}, not "
                          "this host's config: make them the same, or run `jctotp fleet "
                          "init --admin-database URI` with the config you want"))
        return found

    # --- the fleet's audit trail ---------------------------------------------------------

    def add_audit(self, rows: list[tuple[float, str, str, str | None, dict[str, Any]]]
                  ) -> None:
        """Append audit events (ts, host, event, user, fields): one statement per batch."""
        if rows:
            self._rowcount(
                'INSERT INTO audit_events (ts, host_name, event, "user", fields) '
                "SELECT * FROM unnest(%s::float8[], %s::text[], %s::text[], %s::text[], "
                "%s::jsonb[])",
                ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                 [r[3] for r in rows], [Jsonb(r[4]) for r in rows]))

    def audit_events(self, user: str | None = None, since: float | None = None,
                     host: str | None = None, limit: int = 10000
                     ) -> list[tuple[float, str, str, str | None, dict[str, Any]]]:
        """The newest `limit` events, oldest first: (ts, host, event, user, fields)."""
        rows = self._all(
            'SELECT ts, host_name, event, "user", fields FROM (SELECT * FROM audit_events '
            'WHERE (%(user)s::text IS NULL OR "user" = %(user)s) '
            "AND (%(since)s::float8 IS NULL OR ts >= %(since)s) "
            "AND (%(host)s::text IS NULL OR host_name = %(host)s) "
            "ORDER BY id DESC LIMIT %(limit)s) newest ORDER BY ts, host_name",
            {"user": user, "since": since, "host": host, "limit": limit})
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def audit_verify(self) -> dict[str, Any]:
        """Recompute every host's hash chain (pg_audit.verify): what was edited or deleted."""
        return pg_audit.verify(lambda sql: self._run(lambda c: c.execute(sql).fetchall(),
                                                     LONG_DEADLINE))

    def audit_hosts(self) -> list[str]:
        """The hosts that have written to the audit (each has a chain)."""
        return [r[0] for r in self._all(pg_audit.HOSTS)]

    def administer(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`jctotp fleet host ...` (pg_hosts.py), as the schema's owner: one transaction."""
        with self.unit_of_work():
            return self._run(work, LONG_DEADLINE)

    # --- users -----------------------------------------------------------------------

    def get(self, name: str) -> UserRecord | None:
        row = self._one(GET_USER, (name,))
        return _record(row) if row else None

    def list(self) -> list[UserRecord]:
        return [_record(r) for r in self._all(f"{_SELECT} ORDER BY name")]

    def add(self, name: str, *, is_admin: bool, password_hash: str | None, now: float) -> None:
        try:
            self._rowcount("INSERT INTO users (name, is_admin, password_hash, created_at) "
                           "VALUES (%s, %s, %s, %s)", (name, int(is_admin), password_hash, now))
        except pgerrors.UniqueViolation:
            raise StoreError(f"user {name!r} already exists") from None

    def delete(self, name: str) -> bool:
        return self._rowcount("DELETE FROM users WHERE name = %s", (name,)) == 1

    def update(self, name: str, **values: Any) -> bool:
        """Set plain columns of one user (admin/self-service edits), in one statement."""
        bad = set(values) - set(USER_COLUMNS) - {"name"}
        if bad or not values:
            raise ValueError(f"bad columns {bad}")
        assignments = ", ".join(f"{k} = %({k})s" for k in values)
        params = {k: (int(v) if isinstance(v, bool) else v) for k, v in values.items()}
        return self._rowcount(f"UPDATE users SET {assignments} WHERE name = %(_name)s",
                              {**params, "_name": name}) == 1

    def import_user(self, rec: UserRecord, codes: Iterable[tuple[str, float | None]],
                    replace: bool) -> bool:
        """Insert a whole row (`jctotp fleet import`) with its recovery codes, in one
        transaction; False when the name exists and `replace` is not set."""
        values = {k: (int(v) if isinstance(v, bool) else v) for k, v in rec.__dict__.items()}
        columns = ", ".join(USER_COLUMNS)
        placeholders = ", ".join(f"%({k})s" for k in USER_COLUMNS)
        with self.unit_of_work():
            if replace:
                self._rowcount("DELETE FROM users WHERE name = %s", (rec.name,))
            if not self._rowcount(f"INSERT INTO users ({columns}) VALUES ({placeholders}) "
                                  "ON CONFLICT (name) DO NOTHING", values):
                return False
            rows = [(rec.name, h, used) for h, used in codes]
            if rows:
                self._run(lambda c: c.cursor().executemany(
                    'INSERT INTO recovery_codes ("user", code_hash, used_at) '
                    "VALUES (%s, %s, %s)", rows), LONG_DEADLINE)
        return True

    # --- lockout: single statements, no read-modify-write -----------------------------

    def expire_lock(self, name: str, now: float, unlock_after: int) -> bool:
        return self._rowcount(
            "UPDATE users SET locked_at = NULL, lock_reason = NULL, failed_count = 0, "
            "fail_window_start = NULL WHERE name = %s AND locked_at IS NOT NULL "
            "AND %s > 0 AND locked_at <= %s",
            (name, unlock_after, now - unlock_after)) == 1

    def reserve_attempt(self, name: str, now: float, interval: int, limit: int) -> int | None:
        """Count one attempt BEFORE the factors are checked (see sqlite.py)."""
        row = self._one(RESERVE_ATTEMPT, {"name": name, "now": float(now),
                                          "start": float(now - interval), "limit": limit})
        return int(row[0]) if row else None

    def release_attempt(self, name: str) -> None:
        """Give back one reserved attempt (a conversation abandoned before any wrong factor)."""
        self._rowcount("UPDATE users SET failed_count = failed_count - 1 "
                       "WHERE name = %s AND failed_count > 0 AND locked_at IS NULL", (name,))

    def lock_if_exhausted(self, name: str, now: float, limit: int, reason: str) -> bool:
        return self._rowcount(
            "UPDATE users SET locked_at = %s, lock_reason = %s "
            "WHERE name = %s AND locked_at IS NULL AND failed_count >= %s",
            (now, reason, name, limit)) == 1

    def reset_failures(self, name: str) -> None:
        self._rowcount(RESET_FAILURES, (name,))

    def unlock(self, name: str) -> bool:
        return self._rowcount(
            "UPDATE users SET locked_at = NULL, lock_reason = NULL, failed_count = 0, "
            "fail_window_start = NULL WHERE name = %s", (name,)) == 1

    # --- TOTP replay guard ---------------------------------------------------------------

    def accept_step(self, name: str, step: int, reset_failures: bool = False) -> bool:
        return self._rowcount(ACCEPT_STEP_AND_RESET if reset_failures else ACCEPT_STEP,
                              (step, name, step)) == 1

    # --- recovery codes --------------------------------------------------------------

    def replace_recovery_codes(self, name: str, hashes: Iterable[str]) -> None:
        rows = [(name, h) for h in hashes]
        with self.unit_of_work():
            self._rowcount('DELETE FROM recovery_codes WHERE "user" = %s', (name,))
            if rows:
                self._run(lambda c: c.cursor().executemany(
                    'INSERT INTO recovery_codes ("user", code_hash) VALUES (%s, %s)', rows))

    def use_recovery_code(self, name: str, code_hash: str, now: float) -> bool:
        return self._rowcount('UPDATE recovery_codes SET used_at = %s WHERE "user" = %s '
                              "AND code_hash = %s AND used_at IS NULL",
                              (now, name, code_hash)) == 1

    def recovery_codes_left(self, name: str) -> int:
        row = self._one('SELECT count(*) FROM recovery_codes WHERE "user" = %s '
                        "AND used_at IS NULL", (name,))
        return int(row[0]) if row else 0

    def clear_recovery_codes(self, name: str) -> None:
        self._rowcount('DELETE FROM recovery_codes WHERE "user" = %s', (name,))

    # --- codes checked in the database (pg_codecheck.py): keys go in, never out -------

    def verify_code(self, name: str, code: str | None, recovery: str | None, now: float,
                    consume: bool, reset_failures: bool) -> tuple[str, int | None]:
        """A code (canonical digits, or None) and/or a recovery code's keyed hash, checked
        by jctotp_check_code in one statement: (outcome, step)."""
        row = self._one("SELECT outcome, step FROM jctotp_check_code(%s, %s, %s, %s, %s, %s)",
                        (name, code, recovery, float(now), consume, reset_failures))
        assert row is not None
        return str(row[0]), None if row[1] is None else int(row[1])

    def put_key(self, name: str, key: bytes | None) -> bytes | None:
        """Store a user's new TOTP key (RFC 4226's K); returns the key id for the record."""
        row = self._one("SELECT jctotp_put_key(%s, %s)", (name, key))
        assert row is not None
        return None if row[0] is None else bytes(row[0])

    def unseal_legacy(self, unseal: Callable[[bytes, str], bytes]) -> int:
        """Keys sealed with the fleet key before migration 5, made usable by the
        database (only the owner can: a host role's call does nothing)."""
        with self.unit_of_work():
            done: int = self._run(partial(pg_codecheck.unseal_legacy, unseal=unseal),
                                  LONG_DEADLINE)
        return done

    def break_glass_keys(self) -> dict[str, bytes]:
        """The keys of the users the owner listed for the host-local break-glass copy."""
        return {r[0]: bytes(r[1]) for r in self._all("SELECT * FROM jctotp_break_glass_keys()")}

    def totp_rule(self) -> tuple[int, int, int]:
        """(digits, period, window) of the database's check (doctor compares the config)."""
        row = self._one("SELECT digits, period, drift FROM jctotp_totp_rule WHERE id = 1")
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])
