"""The one conversation server (pam_jctotp/transport/conversation_server.py, issue 19).

Both of jctotpd's sockets are its channels. A step that stalls (a locked
database, a dead directory server) is answered by the watchdog when its
budget ends, and nothing else waits; a reply arriving exactly as its
connection expires is sent once, by exactly one side; a conversation learns
whether its last frame was delivered.
"""

from __future__ import annotations

import ast
import logging
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from pam_jctotp import config as configmod
from pam_jctotp.cli.client import request
from pam_jctotp.core.steps import Prompt, Result, VerifyPassword
from pam_jctotp.model import ExitCode
from pam_jctotp.secret import Secret
from pam_jctotp.transport import control_wire, conversation_server, limits
from pam_jctotp.transport.connection import STEP, Conn, reply_budget
from pam_jctotp.transport.control_server import ControlChannel
from pam_jctotp.transport.conversation_server import ConversationServer
from pam_jctotp.transport.fairqueue import FairPool
from pam_jctotp.transport.framing import listen_unix
from pam_jctotp.transport.server import Sockets

TRANSPORT = Path(conversation_server.__file__).parent


class Directory:
    def verify_password(self, name, password):
        return name == "alice" and password.reveal() == "pw"


@pytest.mark.parametrize("shim_timeout", [None, 1, 2, 10, 60])
def test_the_reply_budget_stays_below_the_shims_timeout(shim_timeout):
    budget = reply_budget(shim_timeout)
    assert 0 < budget < (shim_timeout or 10)
    assert (shim_timeout or 10) - budget >= min(0.25, (shim_timeout or 10) / 4)


class Served:
    """A control-channel server on a socket in `tmp`, its verbs from `verbs`."""

    def __init__(self, tmp: Path, verbs: dict, step_seconds: float = 5.0,
                 channel: type[ControlChannel] = ControlChannel) -> None:
        self.path = str(tmp / "control.sock")
        self.argon2 = ThreadPoolExecutor(1)
        cfg = SimpleNamespace(fail_delay=0)

        def handle(acc, uid, req):
            return verbs[req["verb"]]()

        self.channel = channel(None, lambda: cfg,  # type: ignore[arg-type]
                               limits.Throttled(logging.getLogger("jctotpd")),
                               limits.plan(4096, 100), handle=handle,
                               step_seconds=step_seconds)
        self.server = ConversationServer(self.channel, Directory(),  # type: ignore[arg-type]
                                         FairPool(self.argon2, 1))
        self.server.serve_on(listen_unix(self.path))

    def close(self) -> None:
        self.server.close()
        self.argon2.shutdown()


@pytest.fixture
def served(tmp_path):
    made: list[Served] = []

    def make(*args, **kw) -> Served:
        made.append(Served(tmp_path, *args, **kw))
        return made[-1]
    yield make
    for s in made:
        s.close()


def test_the_control_sockets_watchdog_answers_a_stalled_verb(served):
    """A verb whose step stalls (a store waiting on someone else's lock) is answered
    UNAVAILABLE when its budget ends, while another connection's verb (a prompt
    and a password check) completes meanwhile; the stalled conversation is
    closed once its step ends."""
    release = threading.Event()
    cleaned = threading.Event()

    def stalled():
        try:
            release.wait(10)
            yield Result(ExitCode.OK, "too late")
        finally:
            cleaned.set()

    def healthy():
        ok = yield VerifyPassword("alice", Secret((yield Prompt("Password: "))))
        yield Result(ExitCode.OK if ok else ExitCode.REFUSED, "checked")

    s = served({"stalled": stalled, "healthy": healthy}, step_seconds=0.5)
    late: list = []
    started = time.monotonic()
    t = threading.Thread(target=lambda: late.append(request(s.path, "stalled", timeout=5)))
    t.start()
    time.sleep(0.05)
    reply = request(s.path, "healthy", interact=lambda kind, text, echo: "pw", timeout=5)
    assert reply.exit == ExitCode.OK and reply.message == "checked"  # while the other stalls
    t.join(5)
    assert late and late[0].exit == ExitCode.UNAVAILABLE, late
    assert "did not answer in time" in late[0].message
    assert time.monotonic() - started < 0.5 + 0.5   # the budget, and a watchdog tick or two
    assert not cleaned.is_set()
    release.set()
    assert cleaned.wait(5)  # the late conversation was closed once its step ended


def _ask(verb: str) -> bytes:
    return control_wire.encode({"v": 1, "verb": verb, "args": {}})


def _frames(sock: socket.socket) -> list[bytes]:
    """Every frame until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    frames = []
    while data:
        n = int.from_bytes(data[:4], "big")
        frames.append(data[4:4 + n])
        data = data[4 + n:]
    return frames


def test_a_reply_arriving_as_its_connection_expires_is_answered_once(served):
    """The claim/expire race, end to end: each verb's step ends within a few ms of
    its budget, either side of the watchdog's tick. Each connection gets exactly
    one last frame (the verb's result or the watchdog's UNAVAILABLE), never two,
    both outcomes happen, and nothing is left open or counted afterwards."""
    budget = 0.2
    outcomes: list[str] = []

    def racing():
        end = time.monotonic() + budget + (len(outcomes) % 7 - 3) * 0.01
        outcomes.append("")
        time.sleep(max(0.0, end - time.monotonic()))
        yield Result(ExitCode.OK, "the verb's own")

    s = served({"racing": racing}, step_seconds=budget)
    seen: list[str] = []
    for _ in range(28):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(s.path)
            sock.sendall(_ask("racing"))
            frames = _frames(sock)
        assert len(frames) == 1, frames   # one answer, and the connection ends
        reply = control_wire.decode(frames[0])
        seen.append("result" if reply["message"] == "the verb's own" else "watchdog")
        assert reply["exit"] == (ExitCode.OK if seen[-1] == "result" else ExitCode.UNAVAILABLE)
    assert set(seen) == {"result", "watchdog"}, seen
    deadline = time.monotonic() + 2
    while s.server.open and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.server.open == set()                  # no connection leaked
    assert not s.channel.limits.open and s.channel.limits.users_open == 0


def test_claim_and_expire_race_one_winner():
    """The connection's two sides at once, from two threads, 2,000 times (each side
    started first half of the time): exactly one of claim() and expire() wins
    each time, the loser stays lost, and each side won some."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # switch threads as often as the interpreter can
    wins = {"claim": 0, "expire": 0}
    a, b = socket.socketpair()
    try:
        for i in range(2000):
            conn = Conn(a, 0)
            conn.arm(STEP, time.monotonic())
            go = threading.Barrier(2)
            got: dict[str, object] = {}

            def claim(conn: Conn, go: threading.Barrier, got: dict) -> None:
                go.wait()
                got["claim"] = conn.claim()

            def expire(conn: Conn, go: threading.Barrier, got: dict) -> None:
                go.wait()
                got["expire"] = conn.expire(float("inf"))

            first, second = (claim, expire) if i % 2 else (expire, claim)
            t = threading.Thread(target=second, args=(conn, go, got))
            t.start()
            first(conn, go, got)
            t.join()
            assert (got["claim"] is True) != (got["expire"] == STEP), got
            assert conn.claim() is (got["claim"] is True)  # the loser stays lost
            assert conn.expire(float("inf")) is None       # and is answered once
            wins["claim" if got["claim"] is True else "expire"] += 1
    finally:
        sys.setswitchinterval(interval)
        a.close()
        b.close()
    assert wins["claim"] and wins["expire"], wins


class Telling(ControlChannel):
    tells_delivery = True


@pytest.mark.parametrize("delivered", [True, False])
def test_the_conversation_learns_whether_its_last_frame_was_delivered(served, delivered):
    told: list = []

    def granting():
        time.sleep(0.2)  # the peer may leave meanwhile
        told.append((yield Result(ExitCode.OK, "granted")))

    s = served({"granting": granting}, channel=Telling)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(s.path)
        sock.sendall(_ask("granting"))
        if delivered:
            assert b"granted" in b"".join(_frames(sock))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    deadline = time.monotonic() + 5
    while not told and time.monotonic() < deadline:
        time.sleep(0.01)
    assert told == [delivered]


def test_a_control_verb_is_only_closed_after_its_result(served):
    told: list = []

    def granting():
        told.append((yield Result(ExitCode.OK, "done")))

    s = served({"granting": granting})
    assert request(s.path, "granting", timeout=5).message == "done"
    time.sleep(0.1)
    assert told == []  # closed at its result: nothing told as delivered


# --- one server for every socket ----------------------------------------------------

def test_both_sockets_are_served_by_the_one_conversation_server(tmp_path):
    cfg = configmod.parse({"state_dir": str(tmp_path), "pam_socket": str(tmp_path / "p.sock"),
                           "control_socket": str(tmp_path / "c.sock")}, daemon=False)
    sockets = Sockets(None, None, None, lambda: cfg, 2)  # type: ignore[arg-type]
    pam, control = sockets.servers
    assert type(pam) is ConversationServer and type(control) is ConversationServer
    assert (pam.channel.name, control.channel.name) == ("PAM", "control")
    # The accept loop and the step dispatch are written once, in the transport.
    accepts, pumps = [], []
    for path in sorted(TRANSPORT.rglob("*.py")) + sorted((TRANSPORT.parent / "daemon")
                                                          .rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr == "accept":
                    accepts.append(path.name)
                if node.func.attr == "send" and "conv" in ast.unparse(node.func.value):
                    pumps.append(path.name)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == "perform":
                pumps.append(path.name)
    # The accept loop (conversation_server.py), and the watchdog's refusal of the
    # backlog while the io thread is stuck in an inline step.
    assert sorted(accepts) == ["conversation_server.py", "watchdog.py"]
    # One pump: the workers' (worker.py), and connection.finish, the verdict's epilogue.
    assert set(pumps) == {"worker.py", "connection.py"}
