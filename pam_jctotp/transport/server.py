"""jctotpd's two sockets, each served by the one conversation server
(conversation_server.py) through its channel: the PAM socket (root only,
pam_server.py) and the control socket (any local user, control_server.py).

They only carry frames: every decision is made by a conversation
(core/login.py for logins, core/verbs.py for CLI verbs). Each socket has
its own threads, so a slow `useradd` never queues a login. A granted login
is audited only once its verdict was delivered (`abandoned` otherwise).
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
import stat
from collections.abc import Callable

from ..config import Config
from ..core.accounts import Accounts
from ..directory import Directory
from ..errors import JctotpError
from . import limits
from .control_server import control_server
from .conversation_server import ConversationServer
from .fairqueue import FairPool
from .framing import listen_unix
from .pam_server import PamChannel

log = logging.getLogger("jctotpd")


class Sockets:
    """Both sockets of jctotpd: started, and closed, together."""

    def __init__(self, accounts: Accounts, directory: Directory, argon2: FairPool,
                 config: Callable[[], Config], pam_workers: int) -> None:
        self.config = config
        self.throttled = limits.Throttled(log)
        self.pam_channel = PamChannel(accounts, config, self.throttled, pam_workers)
        self.pam = ConversationServer(self.pam_channel, directory, argon2)
        plan = self.pam_channel.plan
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.control_plan = limits.plan(nofile, plan.working + plan.waiting)
        self.control = control_server(accounts, directory, argon2, config, self.throttled,
                                      self.control_plan)

    @property
    def servers(self) -> tuple[ConversationServer, ConversationServer]:
        return self.pam, self.control

    def start(self) -> None:
        cfg = self.config()
        plan, pam = self.control_plan, self.pam_channel.plan
        log.info("control connections: %d per user, %d for all users, %d for root; PAM "
                 "connections: %d working, %d waiting for a person (%d per requester) "
                 "(descriptor limit %d)", plan.per_user, plan.users, plan.root, pam.working,
                 pam.waiting, pam.per_requester, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        prepare(cfg.pam_socket)
        self.pam.serve_on(listen_unix(cfg.pam_socket))
        log.info("listening on %s (mode %o)", cfg.pam_socket, 0o600)
        prepare(cfg.control_socket)
        sock = listen_unix(cfg.control_socket)
        os.chmod(cfg.control_socket, 0o666)
        self.control.serve_on(sock)
        log.info("listening on %s (mode %o)", cfg.control_socket, 0o666)

    def close(self) -> None:
        """Stop accepting; the conversations in a worker get a moment to finish
        (their verdicts, their audit)."""
        self.control.close()
        self.pam.close()
        cfg = self.config()
        for path in (cfg.pam_socket, cfg.control_socket):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def prepare(path: str) -> None:
    """The socket's directory; a stale socket of a dead daemon is removed, a live
    daemon's or a file that is no socket stops the start."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise JctotpError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale socket of a dead daemon
        else:
            raise JctotpError(f"another daemon is already serving {path}")
        finally:
            probe.close()
