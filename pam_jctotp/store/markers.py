"""Lock markers: one empty file per locked user in state_dir/locked.

The shim reads them only when the daemon is unreachable and failmode=open,
so a locked account stays locked even then. Persistent (state_dir), so they
survive a reboot. A host-local cache of the store's locks, kept by the core's
lockout paths through this small object.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable

log = logging.getLogger("jctotpd")


class LockMarkers:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def mark(self, name: str, locked: bool) -> None:
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
            log.error("lock marker %s: %s (failmode=open would not see this lock)", path, exc)

    def sync(self, locked: Iterable[str]) -> None:
        """At start: one marker per locked user, none for anyone else."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        wanted = set(locked)
        for name in set(os.listdir(self.directory)) - wanted:
            self.mark(name, False)
        for name in wanted:
            self.mark(name, True)
