"""Host-local copies of the fleet database, kept current by one thread (issue 13).

What a host must know even while its daemon or the database is down lives in
local files, refreshed whenever the database announces a change (LISTEN/NOTIFY
on `jctotp_users`: a user added or removed, a lock, a key or password changed)
and every RESYNC seconds in any case:

- lock markers (state_dir/locked): the shim's `failmode=open` refuses a user
  locked on ANY host while this host's daemon is down;
- Linux accounts (`create_system_accounts: true`, accounts.py): every directory
  user gets one; an account we made whose user left the directory is locked;
- the break-glass copy (`break_glass_group`, breakglass.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..errors import StoreError
from ..store import Store

log = logging.getLogger("jctotpd.sync")

RESYNC = 60.0   # seconds between full resyncs, notifications or not
RETRY = 2.0     # seconds between reconnects while the database is down


class FleetSync:
    def __init__(self, store: Store, listener: Any, steps: list[Callable[[list[Any]], None]],
                 resync: float = RESYNC) -> None:
        self.store = store
        self.listener = listener
        self.steps = steps
        self.resync = resync
        self.synced = threading.Event()   # set after each completed sync (tests wait on it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        interrupt = getattr(self.listener, "interrupt", None)
        if interrupt is not None:
            interrupt()
        self._thread.join(timeout=5)
        self.listener.close()

    def sync_once(self) -> None:
        rows = self.store.list()
        for step in self.steps:
            try:
                step(rows)
            except (OSError, StoreError) as exc:
                log.error("fleet sync: %s", exc)
        self.synced.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
                # back on a change, or after `resync` seconds: a periodic resync
                self.listener.wait(self.resync)
            except StoreError:
                # the store logged the outage once; try again a little later
                self._stop.wait(RETRY)
