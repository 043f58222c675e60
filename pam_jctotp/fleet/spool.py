"""The fleet audit's spool (issue 22): events the database could not take, kept on
the host until it returns.

During an outage a refusal or a break-glass login is still in the host's audit
file and syslog, but the fleet's table (its hash chain, `jctotp audit` on every
other host) would never hear of it. So FleetAudit (audit.py) appends each such
event to `state_dir/audit-spool`: one JSON line per event, root-only (0600 in
the 0700 state_dir), fsync'd before the login goes on, so it survives a restart
or a kill -9 of the daemon. When the database answers again the spool is shipped
first, before any newer event, in the events' order with their original times,
each marked `spooled: true`, and then emptied. Several processes (pam_processes)
share the file: appends are single O_APPEND writes, shipping holds an flock.

The spool is bounded (MAX_BYTES): past it, one `audit_spool_overflow` line
says when events began to be dropped from it (they stay in the host's file).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("jctotpd.audit")

NAME = "audit-spool"
MAX_BYTES = 16 * 1024 * 1024   # ~50 000 events: hours of refusals on a busy host
OVERFLOW = "audit_spool_overflow"

Row = tuple[float, str, str, "str | None", dict[str, Any]]


class Spool:
    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()   # this process's threads; flock: other processes
        self._said_full = False

    def _open(self, flags: int) -> int:
        fd = os.open(self.path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        if os.fstat(fd).st_mode & 0o077:   # made by hand, or by an older umask: root only
            os.fchmod(fd, 0o600)
        return fd

    def append(self, rows: list[Row]) -> bool:
        """Spool `rows` (fsync'd); False when the spool is full (one line says so)."""
        if not rows:
            return True
        with self._lock:
            try:
                fd = self._open(os.O_RDWR | os.O_APPEND)   # read: its last line
            except OSError as exc:
                log.error("audit spool %s cannot be written: %s (%d event(s) only in the "
                          "host's audit file)", self.path, exc, len(rows))
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)   # not while a shipper reads and empties it
                size = os.fstat(fd).st_size
                data = b"".join(_line(r) for r in rows)
                full = size + len(data) > self.max_bytes
                if full:
                    if not _ends_with_overflow(fd, size):
                        ts, host = rows[0][0], rows[0][1]
                        data = _line((ts, host, OVERFLOW, None, {
                            "reason": f"audit spool full ({self.max_bytes} bytes): later "
                                      "events of the outage are only in this host's audit "
                                      "file"}))
                    else:
                        data = b""
                    if not self._said_full:
                        self._said_full = True
                        log.error("audit spool %s is full (%d bytes): events of this outage "
                                  "are kept only in the host's audit file from now on",
                                  self.path, self.max_bytes)
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
                return not full
            except OSError as exc:
                log.error("audit spool %s cannot be written: %s", self.path, exc)
                return False
            finally:
                os.close(fd)

    def pending(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except OSError:
            return False

    def ship(self, insert: Callable[[list[Row]], None]) -> int:
        """Send the spooled events to `insert` (one batch, oldest first, each marked
        `spooled: true`), then empty the spool. Raises what `insert` raises (the spool
        stays as it was). Returns how many were shipped."""
        with self._lock:
            try:
                fd = self._open(os.O_RDWR)
            except OSError:
                return 0
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                with os.fdopen(os.dup(fd), "rb") as fh:
                    raw = fh.read()
                rows = []
                for line in raw.splitlines():
                    try:
                        ts, host, event, user, fields = json.loads(line)
                        rows.append((float(ts), str(host), str(event), user,
                                     {**fields, "spooled": True}))
                    except (ValueError, TypeError):
                        continue   # a line torn by a crash mid-write: the file has it
                rows.sort(key=lambda r: r[0])   # stable: one time keeps the spool's order
                if rows:
                    insert(rows)
                os.ftruncate(fd, 0)
                os.fsync(fd)
                self._said_full = False
            finally:
                os.close(fd)
        if rows:
            log.warning("audit spool: %d event(s) of the outage shipped to the fleet database",
                        len(rows))
        return len(rows)


def _line(row: Row) -> bytes:
    return (json.dumps(list(row), separators=(",", ":"), ensure_ascii=True) + "\n").encode()


def _ends_with_overflow(fd: int, size: int) -> bool:
    tail = os.pread(fd, 512, max(0, size - 512))
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return OVERFLOW.encode() in last
