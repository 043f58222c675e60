"""The portal's server-side sessions: an opaque cookie id -> CSRF token and jctotpd's token.

The browser's cookie carries only a random id. The rules (who is signed in,
how fresh the last code is, idle and absolute lifetime) live in jctotpd; the
same lifetimes bound these entries so none outlives the daemon's.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

COOKIE = "__Host-jctotp"
MAX = 20000


@dataclass
class WebSession:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    daemon: str | None = None          # jctotpd's session token once the password was right
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)
    flash: str = ""                    # one message for the next page

    def csrf_ok(self, token: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), token.encode("utf-8", "replace"))


class Sessions:
    def __init__(self, idle: float, lifetime: float) -> None:
        self.idle, self.lifetime = idle, lifetime
        self._by_id: OrderedDict[str, WebSession] = OrderedDict()

    def get(self, sid: str | None) -> WebSession | None:
        if not sid:
            return None
        s = self._by_id.get(sid)
        now = time.monotonic()
        if s is None:
            return None
        if now - s.seen > self.idle or now - s.created > self.lifetime:
            del self._by_id[sid]
            return None
        s.seen = now
        self._by_id.move_to_end(sid)
        return s

    def new(self) -> tuple[str, WebSession]:
        sid = secrets.token_urlsafe(32)
        s = self._by_id[sid] = WebSession()
        while len(self._by_id) > MAX:
            self._by_id.popitem(last=False)
        return sid, s

    def drop(self, sid: str) -> None:
        self._by_id.pop(sid, None)
