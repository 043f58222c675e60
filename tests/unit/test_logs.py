"""The daemon's log (issue 12 bug 5): syslog priorities on the journal
stream, plain text elsewhere; unknown-user refusals to LOG_AUTHPRIV, escaped."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import syslog
from pathlib import Path

from harness import PASSWORD, drive

from pam_jctotp import logs
from pam_jctotp.core.login import Login
from pam_jctotp.model import LoginRequest
from pam_jctotp.secret import Secret
from pam_jctotp.transport import pam_wire

REPO = Path(__file__).resolve().parents[2]


def test_levels_map_to_syslog_priorities():
    assert [logs.priority(lv) for lv in (logging.DEBUG, logging.INFO, logging.WARNING,
                                         logging.ERROR, logging.CRITICAL)] == [7, 6, 4, 3, 2]


def test_journal_lines_carry_the_priority_on_every_line():
    """A traceback's lines each get the priority; a message is one line (a
    newline a client chose is escaped, printable.PrintableFormatter)."""
    fmt = logs.JournalFormatter("%(message)s")
    record = logging.LogRecord("jctotpd", logging.ERROR, __file__, 1, "a\nb", None, None)
    assert fmt.format(record) == "<3>a\\x0ab"
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("jctotpd", logging.ERROR, __file__, 1, "failed", None,
                                   sys.exc_info())
    lines = fmt.format(record).split("\n")
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines), lines


JOURNAL_DAEMON = """\
import os, sys
st = os.fstat(2)
if sys.argv[1] == "journal":  # what systemd sets: stderr's own device:inode
    os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
from pam_jctotp import daemon
sys.exit(daemon.main(["--config", "/nonexistent/config.yaml"]))
"""


def daemon_stderr(tmp_path: Path, mode: str) -> list[str]:
    """jctotpd's lines for a missing config file, stderr a file."""
    log = tmp_path / f"stderr-{mode}"
    with open(log, "w") as err:
        rc = subprocess.run([sys.executable, "-c", JOURNAL_DAEMON, mode], stderr=err,
                            timeout=30, env=dict(os.environ, PYTHONPATH=str(REPO))).returncode
    assert rc == 78
    return log.read_text().splitlines()


def test_under_systemd_an_error_is_priority_3(tmp_path):
    """Before: every line at info priority, so `journalctl -p err` found nothing."""
    lines = daemon_stderr(tmp_path, "journal")
    assert lines and all(line.startswith("<3>") for line in lines), lines
    assert "config file not found" in lines[0] and "jctotpd[" not in lines[0]
    plain = daemon_stderr(tmp_path, "terminal")  # no systemd: text, name and pid
    assert plain[0].startswith("jctotpd[") and " ERROR " in plain[0]


def test_an_auth_line_is_one_printable_line():
    """auth.log gets the daemon log's escaping (printable.PrintableFormatter)."""
    sent: list[tuple[int, str]] = []
    handler = logs.AuthprivHandler(lambda prio, text: sent.append((prio, text)))
    handler.emit(logging.LogRecord("jctotpd.auth", logging.WARNING, __file__, 1,
                                   "refused user %s", ("bob\x1b[2J\r\n\x85\u2028é",), None))
    assert sent == [(syslog.LOG_AUTHPRIV | syslog.LOG_WARNING,
                     "refused user bob\\x1b[2J\\x0d\\x0a\\x85\\u2028é")]


def test_unknown_user_refusals_go_to_authpriv_escaped(make_world):
    sent: list[tuple[int, str]] = []
    logs.setup_auth(lambda prio, text: sent.append((prio, text)))
    try:
        world = make_world()
        for call, name in (("auth", "mallory\x1b[2J"), ("acct", "root")):
            req = LoginRequest(call=call, service="su", user=name, rhost="203.0.113.9",
                               tty="", factors="password,totp",
                               authtok=Secret(PASSWORD) if call == "auth" else None)
            # An unknown name is a default user (MFA off): no code prompt (issue 11).
            drive(Login(world.acc, req).run(), [], world.directory)
        world.add("alice")
        req = LoginRequest(call="acct", service="su", user="alice")
        drive(Login(world.acc, req).run(), [], world.directory)
    finally:
        logs.teardown_auth()
    assert [p for p, _ in sent] == [syslog.LOG_AUTHPRIV | syslog.LOG_WARNING] * 2
    assert sent[0][1] == ("refused user mallory\\x1b[2J: not in the directory (auth, "
                          "service su, rhost 203.0.113.9)")
    assert sent[1][1].startswith("refused user root: not in the directory (acct")


def test_ignored_unknown_users_are_not_refusals(make_world):
    sent: list[tuple[int, str]] = []
    logs.setup_auth(lambda prio, text: sent.append((prio, text)))
    try:
        world = make_world(unknown_users="ignore")
        req = LoginRequest(call="acct", service="su", user="root")
        drive(Login(world.acc, req).run(), [], world.directory)
    finally:
        logs.teardown_auth()
    assert sent == []


def test_an_ignore_verdict_is_logged_at_info_not_warning(make_daemon):
    """unknown_users: ignore with the pam-auth-update profile: every root su and
    cron run is an IGNORE; at warning it would flood `journalctl -p warning`."""
    d = make_daemon(unknown_users="ignore")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(d.pam_socket)
        sock.sendall(pam_wire.frame("HELLO JCTOTP/1\ncall=acct\nservice=cron\nuser=root\n"
                                    "rhost=\ntty=\nfactors=totp\ntimeout=10"))
        n = pam_wire.HEADER.unpack(sock.recv(4, socket.MSG_WAITALL))[0]
        assert "IGNORE" in sock.recv(n, socket.MSG_WAITALL).decode()
    lines = [ln for ln in d.log.read_text().splitlines() if "-> IGNORE" in ln]
    assert lines and all(" INFO " in ln for ln in lines), lines
