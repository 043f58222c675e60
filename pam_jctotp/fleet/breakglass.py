"""Break-glass during a fleet-wide database outage (issue 13).

If the fleet's PostgreSQL is down, every login fails closed, on every host at
once: the sysadmins who must fix it would be locked out too. So each host keeps
a host-local copy of the rows of the members of ONE configured local group
(`break_glass_group`, checked through NSS on this host), in a SQLite file in
state_dir (`break-glass.db`, 0600): their password hash and their TOTP secret
(sealed with the fleet key here: the database gives a host the keys of only the
users the owner listed with `jctotp fleet break-glass`, store/pg_codecheck.py),
their lock and counters. The fleet sync
(sync.py) refreshes it on every change the database announces and every
RESYNC seconds, and deletes everyone who left the group.

`BreakGlassStore` wraps the fleet store: when the database is unavailable
(StoreUnavailable) and the user has a local copy, a login's reads and counters
go to the copy; anyone else still fails closed. Nothing else falls back: no
enrollment, no admin verb, no self-service. Locks and replay are then per host
for the length of the outage (the copy's counters are this host's own), and
the logins served so are logged at WARNING: one line per user per minute of
the outage (below).

The copy has a maximum age (issue 20): it holds what the database said when
it last matched (`break-glass.matched` beside it: when), and a member removed
or reset in the database since still has their old password and code in it.
So a copy older than `break_glass_max_age` (default 4 h, as SSSD's
offline_credentials_expiration bounds its cached logins) serves nobody: one
ERROR line per user per minute, an audit event per refused login, and the
login fails closed like everyone else's.

The copy is root's only (issue 22): its files are checked 0600 and owned by
root at every refresh (widened by hand: narrowed again, one ERROR line). And it
does not outlive the host's place in the fleet: when the database answers but
refuses this host's role (`jctotp fleet host remove`, or its password replaced
by `fleet host rotate`), the copy is deleted at once (`drop`), before any
outage could make it serve; the next sync that gets in makes it again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import StoreUnavailable
from ..model import UserRecord
from ..store import Store

log = logging.getLogger("jctotpd.breakglass")

# One WARNING per user per this many seconds of an outage. The store sees calls,
# not logins (a password + code login reads the user twice, its account phase
# once more), so "once per login" cannot be told here; a minute bounds the log
# even for a guesser, and the audit log still has every login.
WARN_EVERY = 60.0
MATCHED = "break-glass.matched"   # beside break-glass.db: when it last matched the database


class BreakGlassStore:
    """The fleet store, with a host-local copy for the break-glass group's logins."""

    def __init__(self, fleet: Store, local: Store, matched: Path, *,
                 max_age: float, wall: Callable[[], float] = time.time,
                 audit: Callable[..., Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`matched`: the file that says when the copy last matched the database;
        `wall`: the daemon's clock (that file's times); `audit`: AuditSink.write;
        `clock`: monotonic, for the log lines' pace."""
        self.fleet = fleet
        self.local = local
        self.matched = matched
        self.max_age = max_age   # break_glass_max_age (a reload sets it)
        self._wall = wall
        self._audit = audit
        self._clock = clock
        self._warned: dict[str, float] = {}   # name -> when its last WARNING was
        self._refused: dict[str, float] = {}  # name -> when its last "too old" line was
        self._warned_lock = threading.Lock()  # store calls come from worker threads

    def __getattr__(self, attr: str) -> Any:   # everything else: the fleet only
        return getattr(self.fleet, attr)

    def _either(self, method: str, name: str, *args: Any) -> Any:
        try:
            result = getattr(self.fleet, method)(name, *args)
        except StoreUnavailable:
            if self.local.get(name) is None:
                raise
            self._check_age(name)
            if self._first(self._warned, name):
                log.warning("break-glass: %s is served from this host's copy (fleet database "
                            "unavailable)", name)
            return getattr(self.local, method)(name, *args)
        if self._warned or self._refused:   # the database answers: the next outage says afresh
            with self._warned_lock:
                self._warned.clear()
                self._refused.clear()
        return result

    def serving(self, name: str) -> bool:
        """Whether `name` is served from this copy in the current outage (audit marks)."""
        with self._warned_lock:
            return name in self._warned

    def _first(self, said: dict[str, float], name: str) -> bool:
        """True once per user per WARN_EVERY (for one kind of line)."""
        now = self._clock()
        with self._warned_lock:
            last = said.get(name)
            if last is not None and now - last < WARN_EVERY:
                return False
            said[name] = now
            return True

    def _check_age(self, name: str) -> None:
        """StoreUnavailable (the login fails closed) unless the copy is young enough."""
        matched = matched_at(self.matched)
        age = None if matched is None else self._wall() - matched
        if age is not None and age <= self.max_age:
            return
        why = ("this host's copy never matched the fleet database" if age is None else
               f"this host's copy last matched the fleet database {age:.0f} s ago")
        if self._first(self._refused, name):
            log.error("break-glass: refused %s: %s, more than break_glass_max_age (%g s); "
                      "logins fail closed until the database answers", name, why,
                      self.max_age)
        if self._audit is not None:
            self._audit("break_glass_refused", name, now=self._wall(),
                        reason=f"{why} (break_glass_max_age {self.max_age:g} s)")
        raise StoreUnavailable(f"break-glass copy too old for {name}")

    def refresh(self, rows: Iterable[UserRecord], member: Callable[[str], bool]) -> int:
        """Make the copy match the database's `rows` (read just now), and say when."""
        when = self._wall()
        kept = refresh(self.local, rows, member)
        write_matched(self.matched, when)
        root_only(self.files())
        return kept

    def files(self) -> list[Path]:
        path = getattr(self.local, "path", None)   # a SqliteStore's file
        if path is None:
            return [self.matched]
        db = Path(path)
        return [db, *(db.with_name(db.name + end) for end in ("-wal", "-shm", "-writer")),
                self.matched]

    def drop(self, why: str) -> bool:
        """The database refuses this host's role: delete the copy (every member's row,
        the file rewritten without them, and the time it matched). True if there was one."""
        if matched_at(self.matched) is None and not self.local.list():
            return False
        with self.local.unit_of_work():
            for rec in self.local.list():
                self.local.delete(rec.name)
        compact = getattr(self.local, "compact", None)   # SqliteStore: VACUUM
        if compact is not None:
            compact()
        self.matched.unlink(missing_ok=True)   # never matched: serves nobody
        log.error("break-glass: the fleet database refuses this host's role (%s): removed "
                  "from the fleet, or its password replaced; this host's break-glass copy "
                  "is deleted (the next sync that gets in makes it again)", why)
        return True

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

    def verify_code(self, name: str, *args: Any) -> tuple[str, int | None] | None:
        """The database checks codes (pg_codecheck.py); during an outage a copied
        member's code is checked by the caller, with the copy's key (None)."""
        try:
            said: tuple[str, int | None] = self.fleet.verify_code(name, *args)  # type: ignore[attr-defined]
            return said
        except StoreUnavailable:
            if self.local.get(name) is None:
                raise
            self._check_age(name)
            return None


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


def root_only(paths: Iterable[Path]) -> None:
    """Each existing file mode 0600 and owned by root (us); narrowed if it was not."""
    for path in paths:
        try:
            st = path.stat()
            if st.st_mode & 0o077 or st.st_uid != os.geteuid():
                os.chown(path, os.geteuid(), os.getegid())
                os.chmod(path, 0o600)
                log.error("break-glass: %s was mode %o, owner uid %d: made root's only "
                          "(0600) again", path, st.st_mode & 0o777, st.st_uid)
        except FileNotFoundError:
            continue


def matched_at(path: Path) -> float | None:
    """When the copy last matched the database (None: never, or unreadable). Read
    at each use: every PAM process (pam_processes) sees jctotpd's refreshes."""
    try:
        return float(path.read_text())
    except (OSError, ValueError):
        return None


def write_matched(path: Path, when: float) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(repr(when))
    os.replace(tmp, path)


def with_keys(rows: Iterable[UserRecord], keys: dict[str, bytes],
              seal: Callable[[str, bytes], bytes]) -> list[UserRecord]:
    """The database's rows with each listed user's key sealed in (its record holds
    only the key's id); an enrolled user whose key the database withheld is left
    out of the copy (not listed by `jctotp fleet break-glass`: fails closed)."""
    out = []
    for rec in rows:
        if rec.name in keys:
            out.append(replace(rec, totp_secret=seal(rec.name, keys[rec.name]),
                               pending_secret=None))
        elif rec.totp_secret is None:
            out.append(replace(rec, pending_secret=None))
    return out
