"""The control socket: a channel of the conversation server (conversation_server.py).

World-writable (mode 0666): each connection is counted against its uid's
budget (limits.ControlLimits) at accept, before anything is read, and a
request over its uid's size limit is refused from its header, before its
payload is read. So no local user can take the descriptors, memory or time
the PAM socket needs. The verb runs under the same watchdog as a login: a
step past CONTROL_STEP (a store or directory that does not answer) is
answered UNAVAILABLE at once, while the worker finishes on its own.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..core import verbs
from ..core.accounts import Accounts
from ..core.steps import Conversation, Error, Info, Prompt, Result, Verdict
from ..directory import Directory
from ..errors import JctotpError, ProtocolError
from ..model import ExitCode
from . import control_wire, limits
from .channel import SEND_PATIENCE, Channel
from .connection import Conn
from .conversation_server import ConversationServer
from .fairqueue import FairPool

log = logging.getLogger("jctotpd")

CONTROL_STEP = 120.0     # a control step (useradd waits up to 30 s)
ACCEPT_BATCH = 8         # control accepts per wake-up: the PAM socket gets its turn
WORKERS = 4              # control requests: their own threads, so useradd never queues a login
ROOT_SEND = 30.0         # seconds root's client may take to read a large reply


class TooLarge(ProtocolError):
    """A control request over its sender's budget (read no further)."""


def _reply(result: Result) -> bytes:
    return control_wire.encode(control_wire.step_message(result))


_STALLED = _reply(Result(ExitCode.UNAVAILABLE, "the daemon's store did not answer in time"))


class ControlChannel(Channel):
    name = "control"
    step_name = "the verb"
    thread = "control"
    workers = WORKERS
    accept_batch = ACCEPT_BATCH
    final_type = Result
    tells_delivery = False   # a verb's result is final when it is yielded

    def __init__(self, accounts: Accounts, config: Callable[[], Config],
                 throttled: limits.Throttled, budget: limits.Plan,
                 handle: Callable[[Accounts, int, dict[str, Any]], Conversation] = verbs.handle,
                 step_seconds: float = CONTROL_STEP) -> None:
        super().__init__(config, throttled)
        self.acc = accounts
        self.limits = limits.ControlLimits(budget)
        self._lock = threading.Lock()   # admit on the io thread, release in a worker
        self.handle = handle
        self.step_seconds = step_seconds

    def admit(self, sock: socket.socket, uid: int, working: int) -> bool:
        with self._lock:
            refusal = self.limits.admit(uid)
        if refusal is None:
            return True
        self.throttled.say(("full", uid), f"control connection refused: {refusal}")
        # one short reply (it fits in the socket buffer: never blocks), then close
        with contextlib.suppress(OSError):
            sock.send(_reply(Result(ExitCode.UNAVAILABLE, f"too many connections: "
                                    f"{refusal}; try again later")))
        sock.close()
        return False

    def release(self, conn: Conn) -> None:
        with self._lock:
            self.limits.release(conn.peer)

    def first_timeout(self, conn: Conn) -> float:
        return self.limits.first_message_timeout(conn.peer)

    def answer_timeout(self, conn: Conn) -> float:
        return self.limits.answer_timeout(conn.peer)

    def send_patience(self, conn: Conn) -> float:
        # A client that does not read holds a worker this long: root's bulk replies
        # (user list --json) may be large; a user's fit in the socket's buffer.
        return ROOT_SEND if conn.peer == 0 else SEND_PATIENCE

    def check_length(self, conn: Conn, length: int) -> int:
        budget = self.limits.message_limit(conn.peer)
        if length > budget:
            raise TooLarge(f"request of {length} bytes is over the {budget}-byte limit "
                           f"for uid {conn.peer}")
        return control_wire.check_length(length)

    def start(self, conn: Conn, payload: bytes) -> tuple[Conversation, float]:
        request = conn.req = control_wire.decode(payload)
        conn.requester = limits.requester("", conn.peer)
        return self._verb(conn.peer, request), self.step_seconds

    def _verb(self, uid: int, request: dict[str, Any]) -> Conversation:
        # verbs.handle looks the caller up (NSS): in the first step, under the watchdog.
        return (yield from self.handle(self.acc, uid, request))

    def answer(self, conn: Conn, payload: bytes) -> str:
        msg = control_wire.decode(payload)
        if msg.get("t") != "answer" or not isinstance(msg.get("text"), str):
            raise ProtocolError("expected an answer")
        text: str = msg["text"]
        return text

    def encode(self, conn: Conn, step: Prompt | Info | Error) -> bytes:
        return control_wire.encode(control_wire.step_message(step))

    def final(self, conn: Conn, step: Verdict | Result) -> bytes:
        assert isinstance(step, Result)
        return _reply(step)

    def fault(self, conn: Conn, exc: Exception) -> bytes | None:
        uid = conn.peer
        if isinstance(exc, TooLarge):
            self.throttled.say(("too large", uid), f"control {exc}: refused")
            return _reply(Result(ExitCode.USAGE, "request too large"))
        if isinstance(exc, ProtocolError):
            # Any local user can send garbage: one line per uid and interval, no traceback.
            self.throttled.say(("malformed", uid), f"control request from uid {uid} "
                               f"refused: {exc}")
            return _reply(Result(exc.exit_code, str(exc)))
        if isinstance(exc, JctotpError):
            return _reply(Result(exc.exit_code, str(exc)))
        if isinstance(exc, (ConnectionError, TimeoutError)):
            # Per uid and interval: connecting and leaving in a loop writes no log.
            self.throttled.say(("left", uid), f"control client (uid {uid}) left before the "
                               "end (nothing more was changed)", logging.INFO)
            return None
        log.error("internal error in a control request", exc_info=exc)
        return _reply(Result(ExitCode.REFUSED, "internal error; see the daemon log"))

    def unavailable(self, conn: Conn) -> bytes:
        return _STALLED

    def peer_late(self) -> None:
        self.throttled.say(("control", "late"), "control client left a request unfinished "
                           "(no frame in time): closed", logging.INFO)


def control_server(accounts: Accounts, directory: Directory, argon2: FairPool,
                   config: Callable[[], Config], throttled: limits.Throttled,
                   budget: limits.Plan) -> ConversationServer:
    """The control socket's server (jctotpd's only)."""
    return ConversationServer(ControlChannel(accounts, config, throttled, budget), directory,
                              argon2)
