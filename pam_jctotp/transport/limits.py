"""The control socket's budget (issue 9): no local user can starve the PAM socket.

The control socket is world-writable, so everything a connection may cost is
decided from its SO_PEERCRED uid at accept, before a byte is read:
- how many connections: per non-root uid, all non-root uids together, and
  root on its own (so users filling their table never lock the admin out);
- how large a request may be (users: a verb, a name, a password; root:
  today's maximum, for bulk verbs) and so how much a read may buffer;
- how long a prompt waits for its answer (a user may not park connections).
What is left of the descriptor limit is the PAM socket's: `plan()` sizes the
control tables from RLIMIT_NOFILE so that the PAM socket's max_connections,
asyncio's accept burst and the daemon's own files always fit.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

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
