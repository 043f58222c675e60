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

The package: pool.py (connections, deadlines, outage, Listener/ChangePoller),
schema.py (MIGRATIONS, jctotp_meta, the key check), users.py (the user rows,
lockout, recovery codes); PostgresStore, here, puts them together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from ...errors import StoreError, StoreUnavailable
from .. import pg_codecheck, pg_policy
from ..dbclock import DatabaseClock
from ..outage import Breaker, DeadlineExceeded, Deadlines, first_line
from . import schema
from .pool import (
    CHANNEL,
    CONNECT_TIMEOUT,
    KEEPALIVES,
    LONG_DEADLINE,
    PROBE_CONNECT_TIMEOUT,
    RECONNECT_TIMEOUT,
    STATEMENT_DEADLINE,
    WAIT_TIMEOUT,
    ChangePoller,
    Connections,
    InOrderConnection,
    Listener,
    T,
    describe,
    hosts_in_order,
    log,
    role_refused,
)
from .schema import MIGRATIONS, SCHEMA_LOCK, Schema
from .users import (
    ACCEPT_STEP,
    ACCEPT_STEP_AND_RESET,
    GET_USER,
    RESERVE_ATTEMPT,
    RESET_FAILURES,
    Users,
)

__all__ = ["ACCEPT_STEP", "ACCEPT_STEP_AND_RESET", "CHANNEL", "CONNECT_TIMEOUT", "GET_USER",
           "KEEPALIVES", "LONG_DEADLINE", "MIGRATIONS", "PROBE_CONNECT_TIMEOUT",
           "RECONNECT_TIMEOUT", "RESERVE_ATTEMPT", "RESET_FAILURES", "SCHEMA_LOCK",
           "STATEMENT_DEADLINE", "WAIT_TIMEOUT", "ChangePoller", "Connections",
           "InOrderConnection", "Listener", "PostgresStore", "describe", "hosts_in_order",
           "role_refused"]


class PostgresStore(Users, Schema, Connections):
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
        self._units = {}
        self._noted = {}   # admin verbs' audit rows the database wrote (users.py)
        self._noted_lock = threading.Lock()
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
                 ("ok" if version == str(len(schema.MIGRATIONS)) else "fail",
                  f"fleet schema version {version} (this jctotpd: {len(schema.MIGRATIONS)})")]
        if self.expected_key_check is None:
            found.append(("warn", "key check: not verified by this process"))
        elif check == self.expected_key_check:
            found.append(("ok", "key check: this host's key file is the fleet's key"))
        else:
            found.append(("fail", "key check: this host's key file is NOT the fleet's key"))
        if self.expected_rule is not None and version == str(len(schema.MIGRATIONS)):
            rule = self.totp_rule()   # the database checks the codes with its own rule
            found.append(("ok", "TOTP rule: the config's is the database's") if rule ==
                         self.expected_rule else
                         ("fail", "TOTP rule: the database checks codes with totp_digits "
                          f"{rule[0]}, totp_period {rule[1]}, totp_window {rule[2]}, not "
                          "this host's config: make them the same, or run `jctotp fleet "
                          "init --admin-database URI` with the config you want"))
        return found

    def administer(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`jctotp fleet host ...` (pg_hosts.py), as the schema's owner: one transaction."""
        with self.unit_of_work():
            return self._run(work, LONG_DEADLINE)

    # --- codes checked in the database (pg_codecheck.py): keys go in, never out -------

    def verify_code(self, name: str, code: str | None, recovery: str | None, now: float,
                    consume: bool, reset_failures: bool) -> tuple[str, int | None]:
        """A code (canonical digits, or None) and/or a recovery code's keyed hash, checked
        by jctotp_check_code in one statement: (outcome, step)."""
        # (jctotp_verify_code: jctotp_check_code, and an accepted code is the proof a
        # host role needs to replace the user's key: pg_userwrites.py)
        row = self._one("SELECT outcome, step FROM jctotp_verify_code(%s, %s, %s, %s, %s, %s)",
                        (name, code, recovery, float(now), consume, reset_failures))
        assert row is not None
        return str(row[0]), None if row[1] is None else int(row[1])

    def put_key(self, name: str, key: bytes | None) -> bytes | None:
        """Store a user's new TOTP key (RFC 4226's K); returns the key id for the record."""
        kid = self._call("SELECT jctotp_set_key(%s::text, %s::bytea)", (name, key))
        return None if kid is None else bytes(kid)

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

    def code_clock(self) -> str:
        """Whose clock the code check takes (pg_codecheck.py): 'database', or 'host'
        where the schema's owner said so (test fleets)."""
        row = self._one("SELECT clock FROM jctotp_totp_rule WHERE id = 1")
        assert row is not None
        return str(row[0])

    def totp_rule(self) -> tuple[int, int, int]:
        """(digits, period, window) of the database's check (doctor compares the config)."""
        row = self._one("SELECT digits, period, drift FROM jctotp_totp_rule WHERE id = 1")
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])
