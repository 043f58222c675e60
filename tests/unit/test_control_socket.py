"""The control socket under a hostile local user, against a real jctotpd (issue 9 items 2-3, 9).

The socket is world-writable: any local user may connect. Their requests
are small and refused when over budget before the payload is read; their
connections are capped per uid, and root still gets in; a full table is one
log line, not one per connection. And a login whose verdict never reached
the shim is audited as `abandoned`, never as `login_ok`.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
from testlib import REPO

from pam_jctotp.errors import ProtocolError
from pam_jctotp.transport import control_wire, limits, pam_wire
from pam_jctotp.transport.channel import Channel
from pam_jctotp.transport.conversation_server import ConversationServer
from pam_jctotp.transport.limits import Throttled

NOBODY = 65534


PRELUDE = f"""
import json, os, socket, struct, sys, time
from pam_jctotp.transport import control_wire as cw
os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
"""


def as_nobody(script: str, timeout: float = 30) -> dict:
    """Run `script` (Python, after PRELUDE) as uid/gid 65534; it prints one JSON object."""
    out = subprocess.run([sys.executable, "-c", PRELUDE + script], capture_output=True,
                         text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_an_oversized_user_request_is_refused_before_its_payload(daemon):
    path = daemon.config["control_socket"]
    got = as_nobody(f"""
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect({path!r})
t = time.monotonic()
s.sendall(struct.pack("!I", cw.MAX_MESSAGE) + b'{{"v": 1, "verb": "status", ')  # never the rest
try:
    n = struct.unpack("!I", s.recv(4))[0]
    reply = cw.decode(s.recv(n))
except socket.timeout:
    reply = None
print(json.dumps({{"reply": reply, "elapsed": time.monotonic() - t}}))
""")
    assert got["reply"] is not None, "the daemon waited for a 4 MiB payload"
    assert got["reply"]["t"] == "result" and got["reply"]["message"] == "request too large"
    log = daemon.log.read_text()
    assert f"over the {limits.USER_MESSAGE}-byte limit for uid {NOBODY}" in log
    assert daemon.ok("user.list") == []  # the daemon is fine


def test_a_users_connections_are_capped_and_root_still_gets_in(daemon):
    path = daemon.config["control_socket"]
    got = as_nobody(f"""
held, refused = [], 0
for _ in range(40):
    s = socket.socket(socket.AF_UNIX); s.settimeout(0.05); s.connect({path!r})
    held.append(s)
time.sleep(1)  # the daemon has answered every one it refuses
for s in held:
    try:
        if s.recv(4):
            refused += 1
    except socket.timeout:
        pass
print(json.dumps({{"refused": refused}}))
""")
    assert got["refused"] == 40 - limits.PER_USER
    log = daemon.log.read_text()
    assert log.count("control connection refused") == 1  # one line, not one per connection
    assert "Traceback" not in log


def test_connecting_and_leaving_in_a_loop_writes_one_log_line(daemon):
    path = daemon.config["control_socket"]
    as_nobody(f"""
for _ in range(200):
    s = socket.socket(socket.AF_UNIX); s.connect({path!r}); s.close()
print("{{}}")
""")
    time.sleep(0.5)
    assert daemon.log.read_text().count("left before the end") <= 1


def test_root_gets_in_while_a_user_holds_all_the_connections_they_may(daemon):
    path = daemon.config["control_socket"]
    holder = subprocess.Popen([sys.executable, "-c", PRELUDE + f"""
held = []
for _ in range({limits.PER_USER}):
    s = socket.socket(socket.AF_UNIX); s.connect({path!r}); held.append(s)
print("held", flush=True)
time.sleep(30)
"""], stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        assert daemon.ok("user.list") == []
        assert time.monotonic() - started < 2
    finally:
        holder.kill()
        holder.wait()


def _pam_frame(sock: socket.socket) -> str:
    n = pam_wire.HEADER.unpack(sock.recv(4, socket.MSG_WAITALL))[0]
    return sock.recv(n, socket.MSG_WAITALL).decode()


def test_a_grant_the_shim_never_received_is_audited_abandoned(daemon):
    """The shim gives up (connection gone) before the verdict: PAM refused the
    login, so the audit log must not say login_ok."""
    daemon.add_user("paula", mfa=False)
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(daemon.pam_socket)
    sock.sendall(pam_wire.frame("HELLO JCTOTP/1\ncall=auth\nservice=sshd\nuser=paula\n"
                                "rhost=\ntty=ssh\nfactors=password,totp\ntimeout=10"))
    assert _pam_frame(sock).startswith("PROMPT_OFF ")
    sock.sendall(pam_wire.frame("ANSWER correct horse battery"))
    sock.close()  # gone before the verdict (argon2 takes ~20 ms)
    deadline = time.monotonic() + 5
    while not any(e["event"] == "abandoned" for e in daemon.audit_events()):
        assert time.monotonic() < deadline, daemon.audit_events()
        time.sleep(0.05)
    events = [e for e in daemon.audit_events() if e.get("user") == "paula"
              and e["event"] != "user_added"]
    assert [e["event"] for e in events] == ["abandoned"], events
    assert events[0]["outcome"] == "login_ok" and events[0]["how"] == "password_only"
    assert "gone before the verdict" in daemon.log.read_text()


class _Listener:
    """A listening socket whose accept() fails as told, then has nothing to give."""

    def __init__(self, errors: list[OSError]) -> None:
        self.errors = errors
        self.fd, self.other = socket.socketpair()

    def accept(self):
        if self.errors:
            raise self.errors.pop(0)
        raise BlockingIOError

    def fileno(self) -> int:
        return self.fd.fileno()


def test_running_out_of_descriptors_is_one_line_not_a_traceback_per_accept(caplog):
    """The accept loop (one for every socket: conversation_server.py) makes EMFILE at
    accept one line per interval and pauses accepting; another accept error keeps
    a line of its own, never a traceback."""
    channel = Channel(lambda: None, Throttled(logging.getLogger("jctotpd")))  # type: ignore
    channel.name = "control"
    server = ConversationServer(channel, None, None)  # type: ignore[arg-type]
    listener = _Listener([OSError(errno.EMFILE, "Too many open files") for _ in range(100)]
                         + [OSError(errno.ECONNABORTED, "Software caused connection abort")])
    server.listener = listener  # type: ignore[assignment]
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(101):
                server._accept()
    finally:
        server.loop.close()
    lines = [(r.name, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines[0] == ("jctotpd", "out of descriptors: Too many open files; new connections "
                        "wait (raise LimitNOFILE?)", False)
    assert lines[1:] == [("jctotpd", "control socket: accept: Software caused connection "
                          "abort", False)]  # the rest: a line of its own


@pytest.mark.parametrize("text, deep", [
    ('{"v": 1, "verb": "user.list", "args": {"names": ["a", "b"]}}', False),
    ("[" * 16 + "]" * 16, False),
    ("[" * 17 + "]" * 17, True),
    ("[{" * 9 + "}]" * 9, True),
    ('{"a": "' + "[" * 4000 + '"}', False),            # brackets inside a string are text
    ('{"a": "\\"' + "[" * 40 + '", "b": ' + "[" * 20 + "]" * 20 + "}", True),
])
def test_nesting_depth_is_bounded_outside_strings(text, deep):
    """Issue 20 item 5: JSON nested deeper than MAX_DEPTH is refused before the
    decoder recurses (4,000 `[` raised RecursionError)."""
    assert control_wire.too_deep(text) is deep
    if deep:
        with pytest.raises(ProtocolError, match="nests deeper"):
            control_wire.decode(text.encode())
