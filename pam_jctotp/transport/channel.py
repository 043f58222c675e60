"""What one socket of the conversation server is: who may connect, its codec, how a
conversation starts, how long a reply may take, and its last words.

The server (conversation_server.py) does the rest, the same for every socket:
accept and pause on EMFILE, claim and expire, parking, the watchdog, the
workers, the fail_delay. pam_server.py and control_server.py are the two
channels of jctotpd.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..core.steps import Conversation, Error, Info, Prompt, Result, Verdict
from . import limits
from .connection import Conn

SEND_PATIENCE = 2.0      # a frame the peer does not take in this long: it is gone


class Channel:
    """The per-socket part; subclasses fill it in (a short class each)."""

    name = "?"                       # in log lines: "PAM", "control"
    step_name = "a step"             # in the watchdog's line: "Login.run", "the verb"
    thread = "conv"                  # thread names: "<thread>-io", "<thread>-3"
    workers = 4                      # worker threads, at most
    accept_batch = 16                # accepts per wake-up
    final_type: type = Verdict       # the step that ends its conversations
    tells_delivery = True            # `delivered = yield final`: the conversation is told
    waiting: limits.Waiting[Conn] | None = None   # a budget for prompts left to a person

    def __init__(self, config: Callable[[], Config], throttled: limits.Throttled) -> None:
        self.config = config         # read at each use: SIGHUP swaps it
        self.throttled = throttled

    # --- who may connect ----------------------------------------------------------

    def admit(self, sock: socket.socket, uid: int, working: int) -> bool:
        """At accept, before a byte is read (`working`: connections open and not
        waiting for a person). False: refused (and closed here)."""
        raise NotImplementedError

    def release(self, conn: Conn) -> None:
        """The connection is closed: give back what `admit` took."""

    def refuse_stalled(self, sock: socket.socket) -> None:
        """A connection accepted while the io thread is stuck in a step: fail it."""

    def serves_inline(self) -> bool:
        """Whether the io thread runs the steps itself (nothing can wait on the network)."""
        return False

    # --- timing ---------------------------------------------------------------------

    def first_timeout(self, conn: Conn) -> float:
        raise NotImplementedError

    def answer_timeout(self, conn: Conn) -> float:
        raise NotImplementedError

    def send_patience(self, conn: Conn) -> float:
        return SEND_PATIENCE

    # --- the codec and the conversation ---------------------------------------------

    def check_length(self, conn: Conn, length: int) -> int:
        raise NotImplementedError

    def start(self, conn: Conn, payload: bytes) -> tuple[Conversation, float]:
        """The first frame: set conn.req and conn.requester; the conversation and the
        reply budget (seconds from each answer to the next frame)."""
        raise NotImplementedError

    def answer(self, conn: Conn, payload: bytes) -> Any:
        raise NotImplementedError

    def encode(self, conn: Conn, step: Prompt | Info | Error) -> bytes:
        raise NotImplementedError

    def final(self, conn: Conn, step: Verdict | Result) -> bytes:
        """The last frame (its log line written before it goes out)."""
        raise NotImplementedError

    def undelivered(self, conn: Conn, step: Verdict | Result) -> None:
        """The peer was gone before the last frame reached it."""

    # --- faults ---------------------------------------------------------------------

    def fault(self, conn: Conn, exc: Exception) -> bytes | None:
        """A fault while serving: its log line, and the last word (None: none)."""
        raise NotImplementedError

    def unavailable(self, conn: Conn) -> bytes:
        """The fail-closed answer: the watchdog's, or a refused waiting conversation's."""
        raise NotImplementedError

    def on_watchdog(self, why: str) -> None:
        """The watchdog answered for a step (`why`: connection.QUEUED, STEP, ARGON2)."""

    def peer_late(self) -> None:
        """A peer that did not send its frame in time (it is dropped)."""
