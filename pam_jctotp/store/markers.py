"""Lock markers: one empty file per locked user in state_dir/locked.

The shim reads them only when the daemon is unreachable and failmode=open,
so a locked account stays locked even then. Persistent (state_dir), so they
survive a reboot. A host-local cache of the store's locks: the core's
lockout paths mark and unmark through this small object, and the markers
follow the database: a marker that could not be written (the directory was
read-only, the disk full) is made by the next resync, which runs on the
next write and periodically (the daemon's housekeeping), and a user who
is gone from the store loses the marker.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable

from ..errors import StoreUnavailable
from ..printable import printable

log = logging.getLogger("jctotpd")


class LockMarkers:
    def __init__(self, directory: str,
                 locked: Callable[[], Iterable[str]] | None = None) -> None:
        self.directory = directory
        self.locked = locked   # the store's locked users (for resync)
        self.stale = False     # a mark failed: the markers lag the store
        self._lock = threading.Lock()  # lockout steps run in worker threads

    def mark(self, name: str, locked: bool) -> None:
        with self._lock:
            if not self._mark(name, locked):
                self.stale = True
                return
        if self.stale:
            self.resync()

    def _mark(self, name: str, locked: bool) -> bool:
        path = os.path.join(self.directory, name)
        try:
            if locked:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("lock marker %s: %s (failmode=open would not see this %s; retried "
                      "at the next resync)", printable(path), exc,
                      "lock" if locked else "unlock")
            return False
        return True

    def sync(self, locked: Iterable[str] | Callable[[], Iterable[str]]) -> bool:
        """One marker per locked user, none for anyone else; True when all done.
        Marks wait meanwhile, so a lock committed after the store was read keeps
        the marker its own mark makes."""
        with self._lock:
            wanted = set(locked() if callable(locked) else locked)
            try:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                present = set(os.listdir(self.directory))
            except OSError as exc:
                log.error("lock markers in %s: %s", printable(self.directory), exc)
                return False
            ok = True
            for name in present - wanted:
                ok = self._mark(name, False) and ok
            for name in wanted - present:
                ok = self._mark(name, True) and ok
            return ok

    def resync(self) -> None:
        """Make the markers match the store's locks now (at start, after a failed
        mark, and from the daemon's housekeeping)."""
        if self.locked is None:
            return
        try:
            done = self.sync(self.locked)
        except StoreUnavailable:
            return   # an outage (the store logged it): the markers stay as they are
        if done and self.stale:
            log.info("lock markers in %s follow the database again",
                     printable(self.directory))
        self.stale = not done
