"""Break-glass during a fleet-wide database outage (issue 13).

If the fleet's PostgreSQL is down, every login fails closed, on every host at
once: the sysadmins who must fix it would be locked out too. So each host keeps
a host-local copy of the rows of the members of ONE configured local group
(`break_glass_group`, checked through NSS on this host), in a SQLite file in
state_dir (`break-glass.db`, 0600): their password hash and their TOTP secret
(still sealed with the fleet key), their lock and counters. The fleet sync
(sync.py) refreshes it on every change the database announces and every
RESYNC seconds, and deletes everyone who left the group.

`BreakGlassStore` wraps the fleet store: when the database is unavailable
(StoreUnavailable) and the user has a local copy, a login's reads and counters
go to the copy; anyone else still fails closed. Nothing else falls back: no
enrollment, no admin verb, no self-service. Locks and replay are then per host
for the length of the outage (the copy's counters are this host's own), and
the logins served so are logged at WARNING: one line per user per minute of
the outage (below).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable

from ..errors import StoreUnavailable
from ..model import UserRecord
from ..store import Store

log = logging.getLogger("jctotpd.breakglass")

# One WARNING per user per this many seconds of an outage. The store sees calls,
# not logins (a password + code login reads the user twice, its account phase
# once more), so "once per login" cannot be told here; a minute bounds the log
# even for a guesser, and the audit log still has every login.
WARN_EVERY = 60.0


class BreakGlassStore:
    """The fleet store, with a host-local copy for the break-glass group's logins."""

    def __init__(self, fleet: Store, local: Store,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fleet = fleet
        self.local = local
        self._clock = clock
        self._warned: dict[str, float] = {}   # name -> when its last WARNING was
        self._warned_lock = threading.Lock()  # store calls come from worker threads

    def __getattr__(self, attr: str) -> Any:   # everything else: the fleet only
        return getattr(self.fleet, attr)

    def _either(self, method: str, name: str, *args: Any) -> Any:
        try:
            result = getattr(self.fleet, method)(name, *args)
        except StoreUnavailable:
            if self.local.get(name) is None:
                raise
            self._warn(name)
            return getattr(self.local, method)(name, *args)
        if self._warned:   # the database answers again: the next outage warns afresh
            with self._warned_lock:
                self._warned.clear()
        return result

    def _warn(self, name: str) -> None:
        now = self._clock()
        with self._warned_lock:
            last = self._warned.get(name)
            if last is not None and now - last < WARN_EVERY:
                return
            self._warned[name] = now
        log.warning("break-glass: %s is served from this host's copy (fleet database "
                    "unavailable)", name)

    # the login path: reads and the lockout/replay counters
    def get(self, name: str) -> UserRecord | None:
        rec: UserRecord | None = self._either("get", name)
        return rec

    def expire_lock(self, name: str, now: float, unlock_after: int) -> bool:
        return bool(self._either("expire_lock", name, now, unlock_after))

    def reserve_attempt(self, name: str, now: float, interval: int, limit: int) -> int | None:
        n: int | None = self._either("reserve_attempt", name, now, interval, limit)
        return n

    def lock_if_exhausted(self, name: str, now: float, limit: int, reason: str) -> bool:
        return bool(self._either("lock_if_exhausted", name, now, limit, reason))

    def release_attempt(self, name: str) -> None:   # a login abandoned half-way
        self._either("release_attempt", name)

    def reset_failures(self, name: str) -> None:
        self._either("reset_failures", name)

    def accept_step(self, name: str, step: int, reset_failures: bool = False) -> bool:
        return bool(self._either("accept_step", name, step, reset_failures))


def refresh(local: Store, rows: Iterable[UserRecord], member: Callable[[str], bool]) -> int:
    """Make the local copy hold exactly the group members' rows; returns how many.
    A copied row keeps the higher replay watermark (a code used here during an
    outage stays used)."""
    keep: dict[str, UserRecord] = {r.name: r for r in rows if member(r.name)}
    with local.unit_of_work():
        for gone in local.list():
            if gone.name not in keep:
                local.delete(gone.name)
        for name, rec in keep.items():
            old = local.get(name)
            if old is None:
                local.add(name, is_admin=bool(rec.is_admin), password_hash=rec.password_hash,
                          now=rec.created_at)
            values = {k: v for k, v in rec.__dict__.items() if k != "name"}
            if old is not None:
                values["last_step"] = max(old.last_step, rec.last_step)
            local.update(name, **values)
    return len(keep)
