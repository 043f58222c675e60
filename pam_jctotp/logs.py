"""The daemon's log: priorities the journal understands, and auth.log.

Under systemd stderr is a journal stream (JOURNAL_STREAM names it): each line
starting with `<N>` gets syslog priority N (sd-daemon(3)), so `journalctl -u
jctotpd -p err` finds the errors. Elsewhere (a container, a terminal) it is
plain text with the name and pid, as before.

Refusals of users the directory does not know also go to syslog's
LOG_AUTHPRIV facility (auth.log), as sshd's "Invalid user" lines do. Every
line, on stderr and in auth.log, goes through printable.PrintableFormatter:
a name comes from a remote client and may carry control characters.
"""

from __future__ import annotations

import logging
import os
import sys
import syslog
from collections.abc import Callable

from .printable import PrintableFormatter

AUTH_LOGGER = "jctotpd.auth"

# logging level -> syslog priority (sd-daemon(3): SD_ERR is "<3>", ...)
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


def priority(levelno: int) -> int:
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class JournalFormatter(PrintableFormatter):
    """`<N>` in front of every line (a traceback's lines too: journald reads
    each line as an entry of its own)."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def stderr_is_journal() -> bool:
    """sd-daemon(3): JOURNAL_STREAM is "device:inode" of the stream; only when
    stderr is still that stream (not redirected by a wrapper)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = stream.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


class AuthprivHandler(logging.Handler):
    """syslog(LOG_AUTHPRIV | priority): /var/log/auth.log on Debian."""

    def __init__(self, send: Callable[[int, str], None] | None = None) -> None:
        super().__init__()
        self.send = send or syslog.syslog
        self.setFormatter(PrintableFormatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.send(syslog.LOG_AUTHPRIV | priority(record.levelno), self.format(record))
        except Exception:  # logging must never take a login down
            self.handleError(record)


def setup(level: str | int = logging.INFO) -> None:
    """The daemon's logging: stderr (journal priorities or plain text) and auth.log."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():  # the journal adds "jctotpd[pid]:" itself
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(PrintableFormatter(
            "jctotpd[%(process)d]: %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    syslog.openlog("jctotpd", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
    setup_auth()


def setup_auth(send: Callable[[int, str], None] | None = None, syslog_too: bool = True
               ) -> None:
    """Refusals of unknown names on stderr and (with the config's
    `audit_syslog: true`, the default) to LOG_AUTHPRIV."""
    auth = logging.getLogger(AUTH_LOGGER)
    teardown_auth()
    if syslog_too:
        auth.addHandler(AuthprivHandler(send))


def teardown_auth() -> None:
    auth = logging.getLogger(AUTH_LOGGER)
    for old_handler in list(auth.handlers):
        auth.removeHandler(old_handler)
    for old_filter in list(auth.filters):
        auth.removeFilter(old_filter)
