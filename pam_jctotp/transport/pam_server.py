"""The PAM socket: a channel of the conversation server (conversation_server.py).

Root only (SO_PEERCRED), `max_connections` working connections, and a
budget for conversations parked at a prompt for a person (limits.Waiting:
per requester, the heaviest requester's newest refused when full), so
unanswered prompts never refuse a fresh login. The first frame is the
shim's HELLO; its `timeout=` sets the reply budget (reply_budget), so the
watchdog's VERDICT AUTHINFO_UNAVAIL reaches the shim before it gives up.
Every fault fails the call closed with that verdict.
"""

from __future__ import annotations

import logging
import resource
import socket
import time
from collections.abc import Callable

from .. import metrics
from ..config import Config
from ..core.accounts import Accounts
from ..core.login import Login
from ..core.steps import Conversation, Error, Info, Prompt, Result, Verdict
from ..directory import Directory
from ..errors import DirectoryUnavailable, ProtocolError, StoreError, StoreUnavailable
from ..model import VerdictCode
from ..printable import printable
from . import limits, pam_wire
from .channel import Channel
from .connection import Conn, reply_budget
from .conversation_server import QUEUE_WAIT, ConversationServer
from .fairqueue import FairPool, TooManyChecks
from .framing import socket_peer_uid

__all__ = ["HELLO_TIMEOUT", "QUEUE_WAIT", "PamChannel", "pam_server", "serves_inline"]

log = logging.getLogger("jctotpd")

HELLO_TIMEOUT = 10.0     # the shim sends HELLO right after connecting
_UNAVAIL = pam_wire.encode_step(Verdict(VerdictCode.AUTHINFO_UNAVAIL))


def serves_inline(cfg: Config) -> bool:
    """Whether the io thread runs the login steps itself: only when no step can wait
    on the network (a fleet database, LDAP, or an NSS group lookup that may be sssd)."""
    return not (cfg.database or cfg.directory.is_ldap or cfg.admin_groups
                or cfg.exempt_groups)


class PamChannel(Channel):
    name = "PAM"
    step_name = "Login.run"
    thread = "pam"

    def __init__(self, accounts: Accounts, config: Callable[[], Config],
                 throttled: limits.Throttled, workers: int) -> None:
        super().__init__(config, throttled)
        self.acc = accounts
        self.workers = workers
        self.plan = limits.pam_plan(resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                                    config().max_connections)
        self.max_connections = self.plan.working
        self.waiting: limits.Waiting[Conn] = limits.Waiting(self.plan)   # the io thread's

    def admit(self, sock: socket.socket, uid: int, working: int) -> bool:
        if working >= self.max_connections:
            self.throttled.say("pam full", f"refusing PAM connections: max_connections "
                               f"({self.max_connections}) reached (not counting "
                               f"{self.waiting.total} waiting for a person)")
        elif uid != 0:
            log.warning("refused PAM connection from uid %d (only root may ask)", uid)
        else:
            return True
        sock.close()
        return False

    def refuse_stalled(self, sock: socket.socket) -> None:
        try:
            if socket_peer_uid(sock) == 0:
                sock.send(_UNAVAIL)
        except OSError:
            pass

    def serves_inline(self) -> bool:
        return serves_inline(self.config())

    def first_timeout(self, conn: Conn) -> float:
        return HELLO_TIMEOUT

    def answer_timeout(self, conn: Conn) -> float:
        return float(self.config().answer_timeout)

    def check_length(self, conn: Conn, length: int) -> int:
        return pam_wire.check_length(length)

    def start(self, conn: Conn, payload: bytes) -> tuple[Conversation, float]:
        req = conn.req = pam_wire.parse_hello(pam_wire.decode(payload))
        conn.requester = limits.requester(req.rhost, req.uid)
        return Login(self.acc, req).run(), reply_budget(req.timeout)

    def answer(self, conn: Conn, payload: bytes) -> object:
        return pam_wire.parse_answer(pam_wire.decode(payload))

    def encode(self, conn: Conn, step: Prompt | Info | Error) -> bytes:
        return pam_wire.encode_step(step)

    def final(self, conn: Conn, step: Verdict | Result) -> bytes:
        req = conn.req
        assert isinstance(step, Verdict)
        # Logged before it is sent: once PAM has its answer, the line is in the log.
        # IGNORE (an unknown user let through by config: root's su, cron) is
        # routine; at warning it would bury the refusals in `journalctl -p warning`.
        routine = step.code in (VerdictCode.SUCCESS, VerdictCode.IGNORE)
        if conn.deadline is not None:
            metrics.login(req.call, step.code, time.monotonic() - conn.deadline.at
                          + conn.deadline.seconds)
        log.log(logging.INFO if routine else logging.WARNING,
                "%s %s user=%s service=%s rhost=%s -> %s", req.call, req.factors,
                printable(req.user), printable(req.service), printable(req.rhost or "-"),
                step.code)
        return pam_wire.encode_step(step, acct_hint=req.acct_hint)

    def undelivered(self, conn: Conn, step: Verdict | Result) -> None:
        assert isinstance(step, Verdict)
        log.warning("user=%s service=%s: the shim was gone before the verdict %s "
                    "reached it (PAM refused the login)", printable(conn.req.user),
                    printable(conn.req.service), step.code)

    def fault(self, conn: Conn, exc: Exception) -> bytes | None:
        if isinstance(exc, ProtocolError):
            log.warning("PAM peer broke the protocol: %s", exc)
        elif isinstance(exc, ConnectionError):
            log.info("PAM peer left before the verdict (login abandoned)")
            return None
        elif isinstance(exc, TimeoutError):
            log.warning("PAM peer timed out")
            return None
        elif isinstance(exc, StoreError):
            if not isinstance(exc, StoreUnavailable):  # an outage is logged once, by the store
                log.error("PAM call failed closed: %s", exc)
        elif isinstance(exc, TooManyChecks):
            pass  # the queue said so, once per interval
        elif isinstance(exc, DirectoryUnavailable):
            # Fail closed; the directory logged the outage once, each login only this.
            log.warning("PAM call failed closed: the directory is unavailable")
        else:
            log.error("internal error during a PAM call; failing it closed", exc_info=exc)
        return _UNAVAIL

    def unavailable(self, conn: Conn) -> bytes:
        return _UNAVAIL

    def on_watchdog(self, why: str) -> None:
        metrics.watchdog(why)

    def peer_late(self) -> None:
        log.warning("PAM peer timed out")


def pam_server(accounts: Accounts, directory: Directory, argon2: FairPool,
               config: Callable[[], Config], throttled: limits.Throttled,
               workers: int) -> ConversationServer:
    """The PAM socket's server (jctotpd's, and each PAM process's)."""
    return ConversationServer(PamChannel(accounts, config, throttled, workers), directory,
                              argon2)
