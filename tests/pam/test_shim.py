"""The shim through the real libpam, against a scripted fake daemon."""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

import pytest
from fakedaemon import Conn, FakeDaemon
from pamdriver import (
    PAM_ACCT_EXPIRED,
    PAM_AUTH_ERR,
    PAM_AUTHINFO_UNAVAIL,
    PAM_CONV_ERR,
    PAM_CRED_INSUFFICIENT,
    PAM_MAXTRIES,
    PAM_PERM_DENIED,
    PAM_SERVICE_ERR,
    PAM_SUCCESS,
    PAM_USER_UNKNOWN,
    SHIM,
    Message,
    run,
    write_service,
)
from testlib import code_at

pytestmark = pytest.mark.pam

SERVICE = "jctest"


def service(confdir: str, sock: str, *options: str, stack: str = "required") -> None:
    opts = " ".join((f"socket={sock}",) + options)
    write_service(
        confdir, SERVICE, [f"auth {stack} {SHIM} {opts}", f"account {stack} {SHIM} {opts}"]
    )


def no_daemon_path() -> str:
    return os.path.join(tempfile.gettempdir(), f"jc-nodaemon-{os.getpid()}.sock")


# --- the happy path ---------------------------------------------------------


def test_password_and_code(confdir: str) -> None:
    def script(conn: Conn) -> None:
        assert conn.prompt("Password: ") == "correct horse"
        conn.send("INFO Welcome\nsecond line")
        conn.send("ERROR careful")
        assert conn.prompt("Verification code: ", echo=True) == "123456"
        conn.verdict("SUCCESS")

    with FakeDaemon(script) as d:
        service(confdir, d.path)
        r = run(
            confdir, SERVICE, "alice", ["correct horse", "123456"], rhost="203.0.113.9", tty="ssh"
        )
    assert r.name == "PAM_SUCCESS"
    assert r.transcript == [
        Message("prompt_off", "Password: "),
        Message("info", "Welcome\nsecond line"),
        Message("error", "careful"),
        Message("prompt_on", "Verification code: "),
    ]
    (conn,) = d.connections
    assert conn.hello_raw.startswith("HELLO JCTOTP/1\n")
    assert conn.hello == {
        "call": "auth",
        "service": SERVICE,
        "user": "alice",
        "rhost": "203.0.113.9",
        "tty": "ssh",
        "factors": "password,totp",
        "timeout": "10",
        "uid": str(os.getuid()),
        "acct_hint": "1",
    }
    assert conn.received[1:] == ["ANSWER correct horse", "ANSWER 123456"]


@pytest.mark.parametrize(
    "code,rc",
    [
        ("SUCCESS", PAM_SUCCESS),
        ("AUTH_ERR", PAM_AUTH_ERR),
        ("USER_UNKNOWN", PAM_USER_UNKNOWN),
        ("MAXTRIES", PAM_MAXTRIES),
        ("ACCT_EXPIRED", PAM_ACCT_EXPIRED),
        ("PERM_DENIED", PAM_PERM_DENIED),
        ("AUTHINFO_UNAVAIL", PAM_AUTHINFO_UNAVAIL),
    ],
)
@pytest.mark.parametrize("call", ["auth", "acct"])
def test_verdicts(confdir: str, code: str, rc: int, call: str) -> None:
    with FakeDaemon(lambda c: c.verdict(code)) as d:
        service(confdir, d.path)
        r = run(confdir, SERVICE, "alice", [], call=call)
    assert r.rc == rc, r
    assert d.connections[0].hello["call"] == call


def ignore_probe(confdir: str, sock: str, *options: str) -> None:
    """A stack whose result tells PAM_IGNORE (-> CRED_INSUFFICIENT) apart."""
    opts = " ".join((f"socket={sock}",) + options)
    write_service(
        confdir,
        SERVICE,
        [
            f"auth [success=ok ignore=ignore default=die] {SHIM} {opts}",
            "auth requisite pam_debug.so auth=cred_insufficient",
        ],
    )


def test_verdict_ignore(confdir: str) -> None:
    with FakeDaemon(lambda c: c.verdict("IGNORE")) as d:
        ignore_probe(confdir, d.path)
        r = run(confdir, SERVICE, "alice", [])
    assert r.rc == PAM_CRED_INSUFFICIENT, r


def test_empty_answer_and_verbatim_answer(confdir: str) -> None:
    def script(conn: Conn) -> None:
        assert conn.prompt("skip? ") == ""
        assert conn.prompt("anything: ") == "  spaced ünïcode\tand tab  "
        conn.verdict("AUTH_ERR")

    with FakeDaemon(script) as d:
        service(confdir, d.path)
        r = run(confdir, SERVICE, "alice", ["", "  spaced ünïcode\tand tab  "])
    assert r.rc == PAM_AUTH_ERR
    assert d.connections[0].received[1] == "ANSWER"


def test_acct_then_both(confdir: str) -> None:
    with FakeDaemon(lambda c: c.verdict("SUCCESS")) as d:
        service(confdir, d.path)
        r = run(confdir, SERVICE, "alice", [], call="both")
    assert r.rc == PAM_SUCCESS
    assert [c.hello["call"] for c in d.connections] == ["auth", "acct"]


def test_factors_totp_and_empty_items(confdir: str) -> None:
    with FakeDaemon(lambda c: c.verdict("SUCCESS")) as d:
        service(confdir, d.path, "factors=totp", "debug", "timeout=5", "failmode=closed")
        r = run(confdir, SERVICE, "bob", [])
    assert r.rc == PAM_SUCCESS
    hello = d.connections[0].hello
    assert hello["factors"] == "totp"
    assert hello["rhost"] == "" and hello["tty"] == ""
    assert "authtok" not in hello


def test_many_info_frames_and_max_frame(confdir: str) -> None:
    big = "INFO " + "x" * (16384 - 5)

    def script(conn: Conn) -> None:
        for i in range(20):
            conn.send(f"INFO line {i}")
        conn.send(big)
        conn.verdict("SUCCESS")

    with FakeDaemon(script) as d:
        service(confdir, d.path)
        r = run(confdir, SERVICE, "alice", [])
    assert r.rc == PAM_SUCCESS
    assert len(r.transcript) == 21
    assert r.transcript[-1].text == "x" * (16384 - 5)


def test_frame_split_across_writes(confdir: str) -> None:
    def script(conn: Conn) -> None:
        payload = b"VERDICT SUCCESS"
        for b in struct.pack(">I", len(payload)) + payload:
            conn.send_raw(bytes([b]))
            time.sleep(0.005)

    with FakeDaemon(script) as d:
        service(confdir, d.path)
        assert run(confdir, SERVICE, "alice", []).rc == PAM_SUCCESS


def test_user_think_time_not_counted(confdir: str) -> None:
    def slow(msg: Message, transcript: list[Message]) -> str:
        time.sleep(1.5)
        return "654321"

    def script(conn: Conn) -> None:
        assert conn.prompt("Verification code: ") == "654321"
        conn.verdict("SUCCESS")

    with FakeDaemon(script) as d:
        service(confdir, d.path, "timeout=1")
        r = run(confdir, SERVICE, "alice", slow)
    assert r.rc == PAM_SUCCESS


def test_concurrent_logins(confdir: str) -> None:
    def script(conn: Conn) -> None:
        user = conn.hello["user"]
        assert conn.prompt("Password: ") == f"pw-{user}"
        conn.verdict("SUCCESS" if user != "u13" else "MAXTRIES")

    results: dict[str, int] = {}

    def login(user: str) -> None:
        results[user] = run(confdir, SERVICE, user, [f"pw-{user}"]).rc

    with FakeDaemon(script) as d:
        service(confdir, d.path)
        threads = [threading.Thread(target=login, args=(f"u{i}",)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 50
    assert results.pop("u13") == PAM_MAXTRIES
    assert set(results.values()) == {PAM_SUCCESS}


# --- control characters -----------------------------------------------------


def test_control_characters_stripped(confdir: str) -> None:
    dirty = "a\x1b[31mred\x1b[0m\r\x07b\x00"[:-1] + "\u0085c\u009b2J\ttab\nline\x7f é\u00a0!"
    clean = "a[31mred[0mbc2J\ttab\nline é\u00a0!"

    def script(conn: Conn) -> None:
        conn.send("INFO " + dirty)
        conn.send("ERROR " + dirty)
        assert conn.prompt(dirty) == "x"
        assert conn.prompt(dirty, echo=True) == "y"
        conn.verdict("SUCCESS")

    with FakeDaemon(script) as d:
        service(confdir, d.path)
        r = run(confdir, SERVICE, "alice", ["x", "y"])
    assert r.rc == PAM_SUCCESS
    assert [m.text for m in r.transcript] == [clean] * 4


# --- the daemon is missing or silent ----------------------------------------
#
# failmode=open applies ONLY when nobody listens (connect: ENOENT or
# ECONNREFUSED). Once somebody answers the connect, every fault or timeout
# fails closed: a daemon that holds back a failure verdict (fail_delay) must
# never look like an absent one (issue 9, item 1).


@pytest.fixture
def lockdir(tmp_path) -> Path:
    """The daemon's lock markers (state_dir/locked): one empty file per locked user."""
    d = tmp_path / "locked"
    d.mkdir()
    (d / "lucy").touch()
    return d


@pytest.fixture
def empty_lockdir(tmp_path) -> Path:
    """An existing lockdir with no marker: failmode=open would open for anyone."""
    d = tmp_path / "nolocks"
    d.mkdir()
    return d


@pytest.fixture
def refused_path():
    """A socket file nobody listens on (bound, never listening): ECONNREFUSED."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        path = os.path.join(tmp, "s")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        try:
            yield path
        finally:
            s.close()


@pytest.mark.parametrize("where", ["no_socket_file", "nobody_listens"])
def test_failmode_closed_unreachable(
    confdir: str, empty_lockdir: Path, refused_path: str, where: str
) -> None:
    """failmode=closed holds even with an existing, empty lockdir."""
    sock = no_daemon_path() if where == "no_socket_file" else refused_path
    ignore_probe(confdir, sock, "failmode=closed", f"lockdir={empty_lockdir}")
    r = run(confdir, SERVICE, "alice", [])
    assert r.rc == PAM_AUTHINFO_UNAVAIL, r
    assert r.elapsed < 0.5


def test_failmode_closed_is_the_default(confdir: str, empty_lockdir: Path) -> None:
    ignore_probe(confdir, no_daemon_path(), f"lockdir={empty_lockdir}")
    assert run(confdir, SERVICE, "alice", []).rc == PAM_AUTHINFO_UNAVAIL


@pytest.mark.parametrize("where", ["no_socket_file", "nobody_listens"])
def test_failmode_open_when_nobody_listens(
    confdir: str, lockdir: Path, refused_path: str, where: str
) -> None:
    """ENOENT / ECONNREFUSED: IGNORE for an unmarked user, never for a locked one."""
    sock = no_daemon_path() if where == "no_socket_file" else refused_path
    ignore_probe(confdir, sock, "failmode=open", f"lockdir={lockdir}")
    assert run(confdir, SERVICE, "alice", []).rc == PAM_CRED_INSUFFICIENT  # = IGNORE
    assert run(confdir, SERVICE, "lucy", []).rc == PAM_AUTHINFO_UNAVAIL


def test_failmode_open_without_lock_markers_fails_closed(confdir: str, tmp_path: Path) -> None:
    """No lockdir (the daemon never ran here): nobody can tell who is locked."""
    ignore_probe(confdir, no_daemon_path(), "failmode=open", f"lockdir={tmp_path}/missing")
    assert run(confdir, SERVICE, "alice", []).rc == PAM_AUTHINFO_UNAVAIL


def _silent(conn: Conn) -> None:
    conn.wait_closed()


def _close_after_hello(conn: Conn) -> None:
    pass  # the connection closes when the script returns


def _close_after_prompt(conn: Conn) -> None:
    conn.send("PROMPT_OFF Verification code: ")


def _close_after_answer(conn: Conn) -> None:
    conn.prompt("Verification code: ")


def _silent_after_answer(conn: Conn) -> None:
    conn.prompt("Verification code: ")
    conn.wait_closed()


def _garbage(conn: Conn) -> None:
    conn.send_raw(b"\xde\xad\xbe\xef garbage garbage")


SOMEONE_LISTENS = {
    "never_answers": _silent,
    "closes_after_hello": _close_after_hello,
    "closes_after_prompt": _close_after_prompt,
    "closes_after_answer": _close_after_answer,
    "silent_after_answer": _silent_after_answer,
    "garbage": _garbage,
}


@pytest.mark.parametrize("name", list(SOMEONE_LISTENS))
def test_failmode_open_never_once_connected(confdir: str, empty_lockdir: Path, name: str) -> None:
    with FakeDaemon(SOMEONE_LISTENS[name]) as d:
        ignore_probe(confdir, d.path, "failmode=open", "timeout=1", f"lockdir={empty_lockdir}")
        r = run(confdir, SERVICE, "alice", ["123456"])
    assert r.rc == PAM_AUTHINFO_UNAVAIL, r  # never CRED_INSUFFICIENT (= IGNORE)
    assert d.connections


def test_failmode_open_never_when_not_accepting(confdir: str, empty_lockdir: Path) -> None:
    """A daemon that listens but never accepts: first the HELLO goes
    unanswered; once the backlog is full, the connect itself times out."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        path = os.path.join(tmp, "s")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(0)
        ignore_probe(confdir, path, "failmode=open", "timeout=1", f"lockdir={empty_lockdir}")
        held: list[socket.socket] = []
        try:
            r = run(confdir, SERVICE, "alice", [])  # queued: connect succeeds, no reply
            assert r.rc == PAM_AUTHINFO_UNAVAIL, r
            while True:  # fill the backlog (AF_UNIX: one more than listen()'s argument)
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.setblocking(False)
                held.append(c)
                try:
                    c.connect(path)
                except BlockingIOError:
                    break
            r = run(confdir, SERVICE, "alice", [])  # connect times out
            assert r.rc == PAM_AUTHINFO_UNAVAIL, r
            assert r.elapsed >= 0.9, r.elapsed
        finally:
            for c in held:
                c.close()
            listener.close()


def test_hello_carries_timeout(confdir: str) -> None:
    """The daemon keeps its delays (fail_delay) below the shim's timeout."""
    with FakeDaemon(lambda c: c.verdict("SUCCESS")) as d:
        service(confdir, d.path, "timeout=3")
        assert run(confdir, SERVICE, "alice", []).rc == PAM_SUCCESS
        service(confdir, d.path)
        assert run(confdir, SERVICE, "alice", []).rc == PAM_SUCCESS
    assert [c.hello["timeout"] for c in d.connections] == ["3", "10"]


def test_failmode_open_behind_permit_refuses_a_wrong_code(make_daemon, confdir: str) -> None:
    """Issue 9 item 1 against the real daemon: fail_delay (2 s) outlasts
    timeout=1; behind pam_permit an IGNORE would log a wrong code in."""
    daemon = make_daemon(fail_delay=2.0)
    totp = daemon.add_user("alice")
    lockdir = daemon.dir / "state" / "locked"
    assert lockdir.is_dir() and not any(lockdir.iterdir())
    opts = f"socket={daemon.pam_socket} factors=totp failmode=open timeout=1 lockdir={lockdir}"
    write_service(confdir, SERVICE, ["auth required pam_permit.so", f"auth required {SHIM} {opts}"])
    good = code_at(totp)
    wrong = f"{(int(good) + 1) % 1000000:06d}"
    r = run(confdir, SERVICE, "alice", [wrong])
    assert r.rc in (PAM_AUTH_ERR, PAM_AUTHINFO_UNAVAIL), r
    assert run(confdir, SERVICE, "alice", [good]).rc == PAM_SUCCESS


@pytest.mark.serial  # a 0.8 s window on the elapsed time
@pytest.mark.parametrize("when", ["after_hello", "after_answer"])
def test_silent_daemon_times_out(confdir: str, when: str) -> None:
    def script(conn: Conn) -> None:
        if when == "after_answer":
            conn.prompt("Password: ")
        conn.wait_closed()

    with FakeDaemon(script) as d:
        service(confdir, d.path, "timeout=1")
        r = run(confdir, SERVICE, "alice", ["pw"])
    assert r.rc == PAM_AUTHINFO_UNAVAIL
    assert 0.95 <= r.elapsed < 1.8, r.elapsed
    assert d.connections[0].eof


def test_failmode_open_still_closed_on_protocol_error(confdir: str, empty_lockdir: Path) -> None:
    with FakeDaemon(lambda c: c.send("VERDICT BOGUS")) as d:
        ignore_probe(confdir, d.path, "failmode=open", f"lockdir={empty_lockdir}")
        assert run(confdir, SERVICE, "alice", []).rc == PAM_AUTHINFO_UNAVAIL


def test_failmode_open_never_overrides_verdict(confdir: str, empty_lockdir: Path) -> None:
    with FakeDaemon(lambda c: c.verdict("MAXTRIES")) as d:
        ignore_probe(confdir, d.path, "failmode=open", f"lockdir={empty_lockdir}")
        assert run(confdir, SERVICE, "alice", []).rc == PAM_MAXTRIES


# --- protocol violations: always PAM_AUTHINFO_UNAVAIL -------------------------


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


SUCCESS = frame(b"VERDICT SUCCESS")

BAD_WIRE = {
    "garbage": b"\xde\xad\xbe\xef garbage garbage",
    "truncated": struct.pack(">I", 100) + b"VERDICT SU",
    "short_header": b"\x00\x00",
    "oversized": struct.pack(">I", 16385) + b"INFO " + b"x" * 16380 + SUCCESS,
    "max_u32": b"\xff\xff\xff\xff" + b"VERDICT SUCCESS",
    "zero_length": struct.pack(">I", 0) + SUCCESS,
    "nul": frame(b"INFO a\x00b") + SUCCESS,
    "nul_in_verdict": frame(b"VERDICT SUCCESS\x00"),
    "invalid_utf8": frame(b"INFO caf\xe9") + SUCCESS,
    "overlong_utf8": frame(b"INFO \xc0\xaf") + SUCCESS,
    "surrogate_utf8": frame(b"INFO \xed\xa0\x80") + SUCCESS,
    "truncated_utf8": frame(b"INFO \xe2\x82") + SUCCESS,
    "unknown_tag": frame(b"HELLO there") + SUCCESS,
    "lowercase_tag": frame(b"info hi") + SUCCESS,
    "tag_no_space": frame(b"INFOhi") + SUCCESS,
    "unknown_verdict": frame(b"VERDICT OK"),
    "empty_verdict": frame(b"VERDICT"),
    "verdict_lowercase": frame(b"VERDICT success"),
    "verdict_trailing": frame(b"VERDICT SUCCESS "),
    "verdict_number": frame(b"VERDICT 0"),
    "eof_after_hello": b"",
}


@pytest.mark.parametrize("name", list(BAD_WIRE))
def test_protocol_violation(confdir: str, name: str) -> None:
    def script(conn: Conn) -> None:
        conn.send_raw(BAD_WIRE[name])

    with FakeDaemon(script) as d:
        service(confdir, d.path, "timeout=2")
        r = run(confdir, SERVICE, "alice", ["pw"])
    assert r.rc == PAM_AUTHINFO_UNAVAIL, r
    assert r.elapsed < 1.0, r.elapsed  # an error, not a timeout
    assert all(m.style == "info" for m in r.transcript)


# --- options ------------------------------------------------------------------


BAD_OPTIONS = [
    "bogus",
    "timeout=0",
    "timeout=61",
    "timeout=abc",
    "timeout=5x",
    "timeout=",
    "timeout=-1",
    "timeout= 5",
    "timeout=99999999999999999999",
    "factors=password",
    "factors=",
    "failmode=maybe",
    "socket=relative.sock",
    "socket=/" + "x" * 120,
    "Debug",
    "use_first_pass=1",
]


@pytest.mark.parametrize("option", BAD_OPTIONS)
def test_bad_option(confdir: str, option: str) -> None:
    with FakeDaemon(lambda c: c.verdict("SUCCESS")) as d:
        service(confdir, d.path, option)
        r = run(confdir, SERVICE, "alice", [])
        time.sleep(0.05)
        assert r.rc == PAM_SERVICE_ERR, r
        assert d.connections == []


def test_use_first_pass_sends_authtok(confdir: str) -> None:
    def script(conn: Conn) -> None:
        assert conn.hello["authtok"] == "s3cret pass"
        assert conn.prompt("Verification code: ") == "000000"
        conn.verdict("SUCCESS")

    with FakeDaemon(script) as d:
        service(confdir, d.path, "use_first_pass")
        r = run(confdir, SERVICE, "alice", ["000000"], authtok="s3cret pass")
    assert r.rc == PAM_SUCCESS
    assert r.transcript == [Message("prompt_off", "Verification code: ")]


def test_use_first_pass_without_authtok(confdir: str) -> None:
    with FakeDaemon(lambda c: c.verdict("SUCCESS")) as d:
        service(confdir, d.path, "use_first_pass")
        r = run(confdir, SERVICE, "alice", ["pw"])
        time.sleep(0.05)
    assert r.rc == PAM_AUTH_ERR
    assert r.transcript == []
    assert d.connections == []


@pytest.mark.parametrize("authtok", [None, "earlier"])
def test_try_first_pass(confdir: str, authtok: str | None) -> None:
    with FakeDaemon(lambda c: c.verdict("SUCCESS")) as d:
        service(confdir, d.path, "try_first_pass")
        r = run(confdir, SERVICE, "alice", [], authtok=authtok)
    assert r.rc == PAM_SUCCESS
    assert d.connections[0].hello.get("authtok") == authtok


def test_authtok_not_sent_without_option(confdir: str) -> None:
    with FakeDaemon(lambda c: c.verdict("SUCCESS")) as d:
        service(confdir, d.path)
        run(confdir, SERVICE, "alice", [], authtok="earlier")
    assert "authtok" not in d.connections[0].hello


def test_authtok_not_sent_for_acct(confdir: str) -> None:
    with FakeDaemon(lambda c: c.verdict("SUCCESS")) as d:
        service(confdir, d.path, "use_first_pass")
        assert run(confdir, SERVICE, "alice", [], call="acct", authtok="x").rc == PAM_SUCCESS
    assert "authtok" not in d.connections[0].hello


# --- refusing to send what the protocol cannot carry ---------------------------


@pytest.mark.parametrize("bad", ["evil\nuser=root", "caf\udce9"], ids=["newline", "not_utf8"])
@pytest.mark.parametrize("field", ["user", "rhost", "tty", "authtok"])
def test_unsendable_field_not_sent(confdir: str, field: str, bad: str) -> None:
    items: dict[str, str | None] = {"user": "alice", "rhost": None, "tty": None, "authtok": None}
    items[field] = bad  # "\udce9" is the raw byte 0xe9 (surrogateescape)
    with FakeDaemon(lambda c: c.verdict("SUCCESS")) as d:
        service(confdir, d.path, "try_first_pass")
        r = run(
            confdir,
            SERVICE,
            items["user"],
            [],
            rhost=items["rhost"],
            tty=items["tty"],
            authtok=items["authtok"],
        )
        time.sleep(0.05)
    assert r.rc == PAM_AUTHINFO_UNAVAIL
    assert d.connections == []


@pytest.mark.parametrize("answer", ["a" * 20000, "caf\udce9"], ids=["too_long", "not_utf8"])
def test_unsendable_answer_not_sent(confdir: str, answer: str) -> None:
    def script(conn: Conn) -> None:
        conn.send("PROMPT_OFF Password: ")
        assert conn.recv() is None  # the shim hangs up without an ANSWER

    with FakeDaemon(script) as d:
        service(confdir, d.path)
        r = run(confdir, SERVICE, "alice", [answer])
    assert r.rc == PAM_AUTH_ERR


def test_user_asked_when_not_set(confdir: str) -> None:
    with FakeDaemon(lambda c: c.verdict("SUCCESS")) as d:
        service(confdir, d.path)
        r = run(confdir, SERVICE, None, ["carol"])
    assert r.rc == PAM_SUCCESS
    assert [m.style for m in r.transcript] == ["prompt_on"]
    assert d.connections[0].hello["user"] == "carol"


# --- the conversation fails ---------------------------------------------------


def test_conversation_error(confdir: str) -> None:
    def script(conn: Conn) -> None:
        conn.send("PROMPT_OFF Password: ")
        assert conn.recv() is None  # the shim hangs up, no ANSWER

    with FakeDaemon(script) as d:
        service(confdir, d.path)
        r = run(confdir, SERVICE, "alice", [])
    assert r.rc == PAM_CONV_ERR
    assert d.connections[0].received == [d.connections[0].hello_raw]


def test_conversation_error_callable(confdir: str) -> None:
    def script(conn: Conn) -> None:
        assert conn.prompt("Password: ") == "pw"
        conn.prompt("Verification code: ")

    with FakeDaemon(script) as d:
        service(confdir, d.path)
        r = run(confdir, SERVICE, "alice", lambda m, t: "pw" if len(t) == 1 else None)
    assert r.rc == PAM_CONV_ERR
    assert len(r.transcript) == 2


def test_shim_survives_daemon_reset(confdir: str) -> None:
    """The daemon drops the connection while the shim writes: no SIGPIPE."""

    def script(conn: Conn) -> None:
        conn.send("PROMPT_OFF Password: ")
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def slow(msg: Message, transcript: list[Message]) -> str:
        time.sleep(0.2)  # the reset arrives meanwhile
        return "pw"

    with FakeDaemon(script) as d:
        service(confdir, d.path)
        r = run(confdir, SERVICE, "alice", slow)
    assert r.rc == PAM_AUTHINFO_UNAVAIL


def test_socket_is_cloexec(confdir: str, tmp_path: Path) -> None:
    """While the shim waits for the user, its socket must carry FD_CLOEXEC."""
    seen: list[bool] = []

    def answer(msg: Message, transcript: list[Message]) -> str:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:"):
                with open(f"/proc/self/fdinfo/{fd}") as f:
                    flags = int(f.read().split("flags:")[1].split()[0], 8)
                seen.append(bool(flags & 0o2000000))
        return "pw"

    def script(conn: Conn) -> None:
        conn.prompt("Password: ")
        conn.verdict("SUCCESS")

    with FakeDaemon(script) as d:
        service(confdir, d.path)
        assert run(confdir, SERVICE, "alice", answer).rc == PAM_SUCCESS
    assert seen and any(seen)
