"""The audit log: one JSON object per line, and the same events to syslog.

Never a password, code, secret or recovery code: callers pass only names,
event types and reasons. Each event is ONE write(2) of its line on an
O_APPEND descriptor: in the file (the kernel's page cache) before the
caller goes on, so nothing is lost on a stop or even a crash of the daemon,
without the text and buffer layers' per-event flush. A failed write is
reported to the daemon log and returned to the caller, who applies
`audit_failure` (continue | deny).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import syslog
import threading
import time
from collections.abc import Iterator
from typing import Any

from . import metrics
from .errors import UsageError
from .printable import json_line, printable

log = logging.getLogger("jctotpd.audit")

EVENTS = frozenset({
    "login_ok", "login_fail", "locked", "unlocked", "enrolled", "enrollment_skipped",
    "enrollment_expired", "mfa_enabled", "mfa_reset", "mfa_disabled", "password_changed",
    "recovery_code_used", "recovery_codes_regenerated", "replay_refused", "exempted",
    "user_added", "user_removed", "user_changed", "acct_refused", "daemon_started",
    "user_provisioned",
    "portal_signout", "password_reset_requested", "password_reset",  # the User Portal
    "abandoned",  # the client left before the verdict reached the shim: PAM refused it
    "break_glass_refused",  # an outage, and this host's break-glass copy is too old
    "policy_set", "config_reloaded",   # the fleet's policy; a SIGHUP (issue 21)
    "break_glass_offline",  # a directory outage: a member's password checked on this host
    "break_glass_verifier",  # `jctotp break-glass`: a member's password verifier written
})


class AuditLog:
    def __init__(self, path: str, use_syslog: bool = True, host: str | None = None) -> None:
        self.path = path
        self.use_syslog = use_syslog
        self.host = host or socket.gethostname()
        self._fh: Any = None
        self._lock = threading.Lock()  # conversation steps write from worker threads
        if use_syslog:
            syslog.openlog("jctotpd", syslog.LOG_PID, syslog.LOG_AUTHPRIV)

    def _open(self) -> Any:
        if self._fh is None:
            os.makedirs(os.path.dirname(self.path), mode=0o750, exist_ok=True)
            self._fh = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o640)
        return self._fh

    def write(self, event: str, user: str | None = None, *, now: float | None = None,
              **fields: Any) -> bool:
        """Append one event; False (and an error in the daemon log) if it could not be."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        metrics.audited(event, fields)
        record: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now or time.time())),
            "ts": round(now or time.time(), 3), "event": event, "user": user,
            "host": self.host,
        }
        record.update({k: v for k, v in fields.items() if v not in (None, "")})
        line = json_line(record)  # one line for every reader, whatever the name holds
        if self.use_syslog:
            syslog.syslog(syslog.LOG_NOTICE, line)
        with self._lock:
            try:
                fd = self._open()
                data = memoryview((line + "\n").encode("utf-8"))
                while data:  # a short write (e.g. the disk filling up) writes the rest
                    data = data[os.write(fd, data):]
            except OSError as exc:
                log.error("audit log %s cannot be written: %s (event %s for %s lost from the "
                          "file; it went to syslog)", self.path, exc, event, printable(user or "-"))
                self._drop()
                return False
        return True

    def writable(self) -> bool:
        """Whether an event could be appended now (the file opens for append):
        checked before a login is granted when `audit_failure: deny`, since the
        grant itself is audited only once the shim has the verdict."""
        with self._lock:
            try:
                self._open()
            except OSError as exc:
                log.error("audit log %s cannot be written: %s", self.path, exc)
                self._drop()
                return False
        return True

    def _drop(self) -> None:
        """Forget the descriptor after a failure (the next event reopens the file)."""
        if self._fh is not None:
            with contextlib.suppress(OSError):
                os.close(self._fh)
        self._fh = None

    def events(self, user: str | None = None, since: float | None = None,
               host: str | None = None) -> Iterator[dict[str, Any]]:
        """This log's events (see read); all from this host."""
        if host not in (None, self.host):
            return iter(())
        return read(self.path, user, since)

    def hosts(self) -> list[str]:
        return [self.host]

    def verify(self) -> dict[str, Any]:
        raise UsageError("audit --verify checks the fleet database's hash chains; this "
                         "host has no fleet database (its audit is its file and syslog)")

    def reopen(self, path: str | None = None) -> None:
        """SIGHUP (logrotate's postrotate): the next event opens the file anew,
        at `path` if the config moved it. No event is lost: writers wait."""
        with self._lock:
            self._drop()
            if path is not None:
                self.path = path

    def close(self) -> None:
        with self._lock:
            self._drop()


def read(path: str, user: str | None = None,
         since: float | None = None) -> Iterator[dict[str, Any]]:
    """Events from the file, oldest first, filtered; unparsable lines are skipped."""
    try:
        # Only the open's error means "no log yet"; a read error must not be skipped.
        fh = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - `with fh` below
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if user is not None and event.get("user") != user:
                continue
            if since is not None and float(event.get("ts", 0)) < since:
                continue
            yield event
