"""The sockets' budgets: no local user can starve the PAM socket (issue 9), and
nobody can crowd out other users' logins (issue 20).

The control socket (issue 9):

The control socket is world-writable, so everything a connection may cost is
decided from its SO_PEERCRED uid at accept, before a byte is read:
- how many connections: per non-root uid, all non-root uids together, and
  root on its own (so users filling their table never lock the admin out);
- how large a request may be (users: a verb, a name, a password; root:
  today's maximum, for bulk verbs) and so how much a read may buffer;
- how long a prompt waits for its answer (a user may not park connections).
What is left of the descriptor limit is the PAM socket's: `plan()` sizes the
control tables from RLIMIT_NOFILE so that the PAM socket's connections
(working and waiting), asyncio's accept burst and the daemon's own files always fit.

The PAM socket (issue 20) has two budgets:
- working connections (`max_connections`): a login being served, or between
  steps (its HELLO, a password check, the fail_delay). A fresh login needs
  one, and only working connections fill it.
- waiting conversations: parked at a prompt for a person (`answer_timeout`,
  120 s by default: sshd's LoginGraceTime). One costs a descriptor and a few
  KB, so there may be many (`pam_plan`), but at most PER_REQUESTER per
  requester (`requester()`), and a full budget refuses the newest waiting
  conversation of the heaviest requester (`Waiting.park`), never a fresh login.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Generic, TypeVar

from . import control_wire

USER_MESSAGE = 4096                       # a non-root request or answer (bytes)
ROOT_MESSAGE = control_wire.MAX_MESSAGE   # root: bulk verbs, unchanged
USER_READ_LIMIT = 8192                    # StreamReader limit (it pauses reading at 2x)
ROOT_READ_LIMIT = 64 * 1024               # bigger root messages grow the buffer as they come
PER_USER = 16                             # connections of one non-root uid
USERS = 256                               # non-root connections together (at most)
ROOT = 64                                 # root's own connections (at most)
FILES_RESERVE = 128                       # store (a connection per worker), logs, key, pools
ACCEPT_BURST = 100                        # asyncio accepts up to its backlog in one go
USER_FIRST_MESSAGE = 5.0                  # seconds until a user's request must be in
ROOT_FIRST_MESSAGE = 10.0
USER_ANSWER = 120.0                       # seconds a user's prompt waits (scan, type a code)
ROOT_ANSWER = 600.0                       # an admin typing


WAITING_MOST = 4096                       # PAM conversations parked for a person (per process)
WAITING_PER_REQUESTER = 64                # ... of one requester (sshd's MaxStartups is 100)
WAITING_LEAST = 16                        # even on a tiny descriptor limit


def requester(rhost: str, uid: int | None) -> str:
    """Who is asking, for the per-requester budgets: the remote host and the uid
    that runs PAM (the shim's HELLO `uid=`). sshd runs PAM as root, so its
    requester is the remote host; su and sudo run as the user (the real uid),
    so a local user is one requester even where the program sets PAM_RHOST
    itself (sudo may set it to the local host name, for every user alike).
    Without rhost, the uid alone; a shim older than `uid=` sends none ("?")."""
    who = "?" if uid is None else str(uid)
    if not rhost:
        return f"uid {who}"
    return f"rhost {rhost}" if uid == 0 else f"uid {who} rhost {rhost}"


@dataclass(frozen=True)
class PamPlan:
    working: int        # max_connections: connections being served
    waiting: int        # conversations parked for a person
    per_requester: int  # ... of one requester


def pam_plan(nofile: int, working: int) -> PamPlan:
    """The PAM socket's budgets in `nofile` descriptors: the working ones as
    configured, the waiting ones from what is left once the control socket's
    full tables, asyncio's accept burst and the daemon's own files are set aside."""
    free = nofile - FILES_RESERVE - ACCEPT_BURST - working - (USERS + ROOT)
    waiting = max(WAITING_LEAST, min(WAITING_MOST, free))
    return PamPlan(working, waiting, max(1, min(WAITING_PER_REQUESTER, waiting // 4)))


T = TypeVar("T")


class Waiting(Generic[T]):
    """The conversations parked for a person, per requester (pam-io's alone: no lock).

    `levels` files each requester under its number of waiting conversations,
    so the heaviest is found in O(PER_REQUESTER), not by a scan of them all."""

    def __init__(self, budget: PamPlan) -> None:
        self.plan = budget
        self.total = 0
        self.by: dict[str, dict[T, None]] = {}          # requester -> its, oldest first
        self.levels: dict[int, dict[str, None]] = {}    # count -> requesters, last moved last

    def park(self, who: str, item: T) -> tuple[T | None, str]:
        """Count `item` as waiting for `who`, unless a budget says no. Returns what to
        refuse (None, `item` itself, or the newest waiting conversation of the
        heaviest requester, which this call has already removed) and why."""
        mine = len(self.by.get(who, ()))
        if mine >= self.plan.per_requester:
            return item, (f"{who} already has {mine} conversations waiting for a person "
                          f"(at most {self.plan.per_requester})")
        victim: T | None = None
        why = ""
        if self.total >= self.plan.waiting:
            top = max(self.levels)
            if mine + 1 > top:  # `who` would be the heaviest: its newest is this one
                return item, (f"{self.total} conversations wait for a person (at most "
                              f"{self.plan.waiting}); {who} has the most ({mine + 1})")
            heaviest = next(reversed(self.levels[top]))
            victim = next(reversed(self.by[heaviest]))
            self.remove(heaviest, victim)
            why = (f"{self.plan.waiting} conversations wait for a person (at most); "
                   f"refused the newest of {heaviest}, who has the most ({top})")
        self._move(who, mine, mine + 1)
        self.by.setdefault(who, {})[item] = None
        self.total += 1
        return victim, why

    def remove(self, who: str, item: T) -> bool:
        """`item` no longer waits (answered, timed out, refused); False if it did not."""
        parked = self.by.get(who)
        if parked is None or item not in parked:
            return False
        del parked[item]
        if not parked:
            del self.by[who]
        self._move(who, len(parked) + 1, len(parked))
        self.total -= 1
        return True

    def count(self, who: str) -> int:
        return len(self.by.get(who, ()))

    def _move(self, who: str, old: int, new: int) -> None:
        if old:
            level = self.levels[old]
            del level[who]
            if not level:
                del self.levels[old]
        if new:
            self.levels.setdefault(new, {})[who] = None


@dataclass(frozen=True)
class Plan:
    users: int      # non-root connections together
    root: int       # root's connections
    per_user: int   # one non-root uid's connections


def plan(nofile: int, pam_connections: int) -> Plan:
    """Control tables that fit beside the PAM socket in `nofile` descriptors."""
    free = max(0, nofile - FILES_RESERVE - ACCEPT_BURST - pam_connections)
    root = max(1, min(ROOT, free // 4))
    users = max(0, min(USERS, free - root))
    return Plan(users=users, root=root, per_user=min(PER_USER, users))


class ControlLimits:
    """Counts the control connections open per uid; admits or refuses new ones."""

    def __init__(self, budget: Plan) -> None:
        self.plan = budget
        self.open: Counter[int] = Counter()
        self.users_open = 0

    def admit(self, uid: int) -> str | None:
        """Take a slot for `uid`, or say why not (the connection is then closed)."""
        if uid == 0:
            if self.open[0] >= self.plan.root:
                return f"root already has {self.plan.root} control connections open"
        elif self.open[uid] >= self.plan.per_user:
            return f"uid {uid} already has {self.plan.per_user} control connections open"
        elif self.users_open >= self.plan.users:
            return f"{self.plan.users} user control connections are open"
        else:
            self.users_open += 1
        self.open[uid] += 1
        return None

    def release(self, uid: int) -> None:
        self.open[uid] -= 1
        if not self.open[uid]:
            del self.open[uid]
        if uid != 0:
            self.users_open -= 1

    @staticmethod
    def message_limit(uid: int) -> int:
        return ROOT_MESSAGE if uid == 0 else USER_MESSAGE

    @staticmethod
    def read_limit(uid: int) -> int:
        return ROOT_READ_LIMIT if uid == 0 else USER_READ_LIMIT

    @staticmethod
    def first_message_timeout(uid: int) -> float:
        return ROOT_FIRST_MESSAGE if uid == 0 else USER_FIRST_MESSAGE

    @staticmethod
    def answer_timeout(uid: int) -> float:
        return ROOT_ANSWER if uid == 0 else USER_ANSWER


class Throttled:
    """One log line per key per interval: the first at once, the rest counted
    and reported with the next line ("and N more"), never one line per event."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.log = logger
        self.interval = interval
        self._last: dict[object, float] = {}
        self._held: Counter[object] = Counter()

    def say(self, key: object, message: str, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] += 1
            return
        more = self._held.pop(key, 0)
        self._last[key] = now
        if len(self._last) > 4096:  # forget quiet keys (many uids): bounded memory
            cutoff = now - self.interval
            for k in [k for k, t in self._last.items() if t < cutoff]:
                del self._last[k]
                self._held.pop(k, None)
        suffix = f" (and {more} more like it since)" if more else ""
        self.log.log(level, "%s%s", message, suffix)
