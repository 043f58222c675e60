"""Connections to the LDAP directory (part of directory/ldap.py's LdapDirectory): the
URIs tried in order, TLS verified (ldaps:// or StartTLS), every call bounded by
`timeout`, small pools of idle connections (service-bound, and for user binds),
one retry on a fresh connection, and one log line per outage (offline.py).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import ldap3
from ldap3.core.exceptions import LDAPException

from ..config.directory import DirectoryConfig
from ..errors import DirectoryUnavailable
from ..offline import Offline

POOL_SIZE = 8           # idle connections kept per kind

T = TypeVar("T")


class Pool:
    """Idle connections of one kind, lent to one thread at a time."""

    def __init__(self, make: Callable[[], ldap3.Connection], size: int = POOL_SIZE) -> None:
        self._make = make
        self._size = size
        self._idle: list[ldap3.Connection] = []
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self, fresh: bool = False) -> Iterator[ldap3.Connection]:
        conn = None
        if not fresh:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._make()
        kept = False
        try:
            yield conn
            with self._lock:
                if len(self._idle) < self._size and not conn.closed:
                    self._idle.append(conn)
                    kept = True
        finally:
            if not kept:
                close_connection(conn)

    def clear(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            close_connection(conn)


def close_connection(conn: ldap3.Connection) -> None:
    # a broken socket cannot be closed more politely
    with contextlib.suppress(Exception):
        conn.unbind()


def describe(exc: BaseException, ca_file: str) -> str:
    text = str(exc) or type(exc).__name__
    if "certificate" in text.lower() or "CERTIFICATE" in text:
        return f"TLS certificate not verified against {ca_file} ({text})"
    return text


class LdapConnections:
    """The connection half of LdapDirectory (its attributes are set there)."""

    cfg: DirectoryConfig
    offline: Offline
    _bind_password: str | None
    _tls: ldap3.Tls
    _servers: list[tuple[str, bool]]
    _service: Pool
    _auth: Pool

    # --- connections -------------------------------------------------------------------

    def _service_connection(self) -> ldap3.Connection:
        conn = self._open(self.cfg.bind_dn, self._bind_password)
        if self.cfg.bind_dn is None:
            return conn
        try:
            ok = conn.bind(read_server_info=False)
        except LDAPException as exc:
            close_connection(conn)
            raise self._down(f"service bind: {describe(exc, self.cfg.ca_file)}") from None
        if not ok:
            why = (conn.result or {}).get("description")
            close_connection(conn)
            raise self._down(f"the service bind as {self.cfg.bind_dn} was refused ({why}); "
                             "check directory.bind_dn and directory.bind_password_file")
        return conn

    def _open(self, user: str | None, password: str | None) -> ldap3.Connection:
        """A connection to the first URI that answers (TLS verified, not yet bound)."""
        errors = []
        for uri, start_tls in self._servers:
            try:
                conn = self._connect(uri, start_tls)
            except (LDAPException, OSError) as exc:
                errors.append(f"{uri}: {describe(exc, self.cfg.ca_file)}")
                continue
            conn.user, conn.password = user, password
            return conn
        raise self._down("; ".join(errors))

    def _connect(self, uri: str, start_tls: bool) -> ldap3.Connection:
        # A new Server each time: ldap3 remembers a failed address for minutes
        # ("invalid server address"), and we want to see the directory come back.
        server = ldap3.Server(uri, tls=self._tls, connect_timeout=self.cfg.timeout,
                              get_info=ldap3.NONE)
        # ldap3 packs the receive timeout into SO_RCVTIMEO as whole seconds.
        conn = ldap3.Connection(server, receive_timeout=max(1, math.ceil(self.cfg.timeout)),
                                raise_exceptions=False, auto_referrals=False,
                                authentication=ldap3.SIMPLE)
        try:
            conn.open(read_server_info=False)
            if start_tls and not conn.start_tls(read_server_info=False):
                raise DirectoryUnavailable(f"StartTLS refused: "
                                           f"{(conn.result or {}).get('description')}")
        except BaseException:
            close_connection(conn)
            raise
        return conn

    def _with_service(self, fn: Callable[[ldap3.Connection], T]) -> T:
        return self._with(self._service, fn)

    def _with(self, pool: Pool, fn: Callable[[ldap3.Connection], T]) -> T:
        """fn(conn) on a pooled connection; once more on a fresh one if that broke."""
        for fresh in (False, True):
            try:
                with pool.borrow(fresh) as conn:
                    result = fn(conn)
                self._reached(getattr(conn.server, "name", ""))
                return result
            except LDAPException as exc:
                if fresh:
                    raise self._down(describe(exc, self.cfg.ca_file)) from None
                pool.clear()   # the server restarted or the network broke: all are stale
        raise AssertionError("unreachable")

    # --- one log line per outage ----------------------------------------------------

    @property
    def up(self) -> bool:
        """Not known to be down (for metrics: directory_up)."""
        return not self.offline.down

    def _down(self, why: str) -> DirectoryUnavailable:
        self.offline.went_down(why)
        return DirectoryUnavailable(f"the directory is unavailable ({why})")

    def _reached(self, uri: str) -> None:
        self.offline.back(uri)
