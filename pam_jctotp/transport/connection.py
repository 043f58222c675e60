"""One connection of the conversation server, and who owns it (conversation_server.py).

A connection is owned by exactly one of: the ready queue, a worker, the io
thread (parked, or running it inline) or the argon2 pool. The hand-overs and
the watchdog meet in `claim`/`expire`, under the connection's lock: whichever
comes first wins, so a reply is never written twice, and no frame goes out
after the watchdog's fail-closed answer.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any

from ..core.steps import Conversation, Result, Verdict

SHIM_TIMEOUT = 10     # the shim's default timeout= (seconds)
SETTLE = 10.0         # auditing a verdict once it was delivered (or not)

# What a connection is waiting for (its deadline's meaning).
HELLO, ANSWER, STEP, QUEUED, ARGON2, SETTLING = ("hello", "answer", "step", "queued",
                                                   "argon2", "settling")


def reply_budget(shim_timeout: int | None) -> float:
    """Seconds the daemon may spend between an answer and its next frame:
    safely below the shim's timeout, so the shim never gives up on us first."""
    t = float(shim_timeout or SHIM_TIMEOUT)
    return max(0.2, t - min(1.0, t * 0.25))


class Deadline:
    """The end of the current reply window (restarted after each answer)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.restart()

    def restart(self) -> None:
        self.at = time.monotonic() + self.seconds

    def left(self) -> float:
        return self.at - time.monotonic()


class PeerGone(ConnectionError):
    """The peer closed the connection."""


class Conn:
    """One connection and where its conversation stands."""

    __slots__ = ("sock", "fd", "buf", "lock", "due", "why", "dead", "peer", "req", "conv",
                 "deadline", "value", "error", "final", "ready_at", "conv_closed",
                 "reading", "send_at", "requester", "timer", "future")

    def __init__(self, sock: socket.socket, peer: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.due: float | None = None   # the watchdog's deadline for `why`
        self.why = QUEUED
        self.dead = False               # answered by the watchdog: only cleanup is left
        self.peer = peer                # its SO_PEERCRED uid
        self.req: Any = None            # what the first frame asked (the channel's)
        self.conv: Conversation | None = None
        self.deadline: Deadline | None = None
        self.value: Any = None          # what the conversation is sent next
        self.error: BaseException | None = None  # or what its password check raised
        self.final: Verdict | Result | None = None
        self.ready_at = 0.0
        self.conv_closed = False
        self.reading = True             # waiting for a frame (the first one, or an answer)
        self.send_at = 0.0              # a failure's answer goes out then (fail_delay)
        self.requester = ""             # limits.requester(), for the fair queues
        self.timer: asyncio.TimerHandle | None = None  # answer_timeout, while waiting
        self.future: Future[Any] | None = None          # its password check

    def arm(self, why: str, due: float) -> None:
        with self.lock:
            self.why, self.due = why, due

    def claim(self) -> bool:
        """Take the connection over from a wait; False if the watchdog was first."""
        with self.lock:
            if self.dead:
                return False
            self.due = None
            return True

    def expire(self, now: float) -> str | None:
        """The watchdog's side of `claim`: what timed out, or None."""
        with self.lock:
            if self.dead or self.due is None or self.due > now:
                return None
            self.dead = True
            self.due = None
            return self.why


def finish(conv: Conversation, delivered: bool) -> object | None:
    """Tell a finished conversation whether its answer arrived, then close it; None
    once it ends (what it yielded after its verdict otherwise)."""
    try:
        return conv.send(delivered)
    except StopIteration:
        return None
    finally:
        conv.close()
