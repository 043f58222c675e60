"""What jctotpd remembers for the User Portal (issue 23): sessions, reset links, rates.

In memory, in the daemon: the portal holds only an opaque session token, so it
can decide nothing; a daemon restart signs everyone out and voids every
outstanding reset link (fail closed). Tokens are kept as SHA-256 hashes only
(a memory dump names no live token), and each table is bounded.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Protocol

from ..secret import Secret
from .lockout import Attempt

MAX_SESSIONS = 10000
MAX_RESETS = 10000
MAX_ADDRESSES = 10000
RATE_WINDOW = 60.0


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def new_token() -> tuple[str, str]:
    """(token for the client, hash to keep)."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


@dataclass
class Session:
    name: str
    created: float
    seen: float
    address: str
    # Password right, code awaited: the sign-in's one attempt stays reserved until
    # the code settles it (one attempt covers both factors, as in an SSH login).
    attempt: Attempt | None = None
    code_at: float | None = None        # the last code (or recovery code) typed and accepted
    new_secret: Secret | None = field(default=None, repr=False)  # a reset's key, unconfirmed

    @property
    def signed_in(self) -> bool:
        return self.attempt is None


@dataclass(frozen=True)
class ResetLink:
    name: str
    expires: float


class Outbox(Protocol):
    """Where mails go: queued, sent by another thread (never blocks a verb)."""

    enabled: bool

    def send(self, template: str, to: str, **fields: object) -> None: ...


class NoOutbox:
    """No `smtp:` configured: nothing is sent."""

    enabled = False

    def send(self, template: str, to: str, **fields: object) -> None:
        pass


class PortalState:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.resets: OrderedDict[str, ResetLink] = OrderedDict()
        self._rates: OrderedDict[str, deque[float]] = OrderedDict()

    # --- sessions ---------------------------------------------------------

    def open(self, session: Session) -> str:
        token, key = new_token()
        with self._guard:
            self.sessions[key] = session
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
        return token

    def get(self, token: str, now: float, idle: float, lifetime: float) -> Session | None:
        """The live session of `token` (its idle clock restarted), or None."""
        key = token_hash(token)
        with self._guard:
            s = self.sessions.get(key)
            if s is None:
                return None
            if now - s.seen > idle or now - s.created > lifetime:
                del self.sessions[key]
                return None
            s.seen = now
            return s

    def take_attempt(self, token: str) -> Attempt | None:
        """The awaited code's attempt, handed out once (concurrent codes for one
        password get one check); the session is signed in or dropped after."""
        with self._guard:
            s = self.sessions.get(token_hash(token))
            if s is None or s.attempt is None:
                return None
            attempt, s.attempt = s.attempt, None
            return attempt

    def close(self, token: str) -> Session | None:
        with self._guard:
            return self.sessions.pop(token_hash(token), None)

    def close_user(self, name: str, keep: str | None = None) -> None:
        """Sign `name` out everywhere (a password reset), but for the session `keep`."""
        keep_key = token_hash(keep) if keep else None
        with self._guard:
            for key in [k for k, s in self.sessions.items() if s.name == name and k != keep_key]:
                del self.sessions[key]

    # --- reset links --------------------------------------------------------

    def new_reset(self, name: str, expires: float) -> str:
        token, key = new_token()
        with self._guard:
            # One live link per user: a newer mail voids the older link.
            for old in [k for k, r in self.resets.items() if r.name == name]:
                del self.resets[old]
            self.resets[key] = ResetLink(name, expires)
            while len(self.resets) > MAX_RESETS:
                self.resets.popitem(last=False)
        return token

    def peek_reset(self, token: str, now: float) -> ResetLink | None:
        with self._guard:
            link = self.resets.get(token_hash(token))
            if link is not None and link.expires <= now:
                del self.resets[token_hash(token)]
                return None
            return link

    def redeem_reset(self, token: str, now: float) -> ResetLink | None:
        """Use the link up: of two concurrent redemptions one gets it."""
        with self._guard:
            link = self.resets.pop(token_hash(token), None)
        return link if link is not None and link.expires > now else None

    # --- per-address rate ------------------------------------------------------

    def rate_ok(self, address: str, now: float, per_minute: int) -> bool:
        """Count one request of `address`; False past `per_minute` in the last minute."""
        with self._guard:
            times = self._rates.pop(address, None) or deque()
            while times and times[0] <= now - RATE_WINDOW:
                times.popleft()
            ok = len(times) < per_minute
            if ok:
                times.append(now)
            self._rates[address] = times
            while len(self._rates) > MAX_ADDRESSES:
                self._rates.popitem(last=False)
            return ok
