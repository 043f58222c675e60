"""The PAM socket's serving model (transport/pam_server.py; issue 15 second pass).

A login runs on one worker thread from HELLO to verdict, but a worker never
waits for a person: stalled clients hold connection slots, not workers. A
step that outlives the shim's timeout budget is answered by the watchdog; a
login that finds every worker stuck fails closed fast, with one log line.
Raw protocol clients (docs/protocol.md) stand in for the shim where the test
needs many connections or a peer that misbehaves.

Every test runs in both serving modes: inline (pam-io runs the steps: local
SQLite and no group lookup, the default) and workers (forced here by an
`exempt_groups` entry, whose NSS lookup may wait on the network; a fleet
database or LDAP do the same).
"""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pamdriver as pd
import pytest
from testlib import TEST_DATABASE, code_at

from pam_jctotp.daemon import PAM_STEP_WORKERS
from pam_jctotp.transport import pam_wire
from pam_jctotp.transport.pam_server import HELLO_TIMEOUT, QUEUE_WAIT

pytestmark = pytest.mark.pam

NO_SUCH_GROUP = "jctotp-test-no-such-group"


@pytest.fixture(params=["inline", "workers"])
def daemon(request, make_daemon):
    if request.param == "workers":
        return make_daemon(exempt_groups=[NO_SUCH_GROUP])
    return make_daemon()


def hello(user: str, timeout: int = 10) -> bytes:
    return pam_wire.frame(f"HELLO JCTOTP/1\ncall=auth\nservice=sshd\nuser={user}\nrhost=\n"
                          f"tty=ssh\nfactors=totp\ntimeout={timeout}")


def read_frame(sock: socket.socket) -> str:
    header = sock.recv(4, socket.MSG_WAITALL)
    if len(header) < 4:
        return ""
    n = pam_wire.HEADER.unpack(header)[0]
    return sock.recv(n, socket.MSG_WAITALL).decode()


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(15)
    sock.connect(path)
    return sock


@contextmanager
def locked_database(daemon) -> Iterator[None]:
    """Another process holds the write lock: every store write waits its busy timeout."""
    holder = sqlite3.connect(Path(daemon.config["state_dir"]) / "jctotp.db",
                             isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def login(daemon, confdir: str, user: str, totp) -> pd.Result:
    opts = f"socket={daemon.pam_socket} timeout=10"
    pd.write_service(confdir, "jctotp-workers", [f"auth required {pd.SHIM} {opts} factors=totp"])
    return pd.run(confdir, "jctotp-workers", user, [code_at(totp)])


def test_stalled_clients_do_not_hold_the_workers(daemon, confdir):
    """More silent peers than workers (no HELLO, half a HELLO, a HELLO and no answer):
    a login still gets its verdict at once, not after their 10 s HELLO timeout."""
    totp = daemon.add_user("alice")
    stalled = []
    for n in range(PAM_STEP_WORKERS + 4):
        sock = connect(daemon.pam_socket)
        if n % 3 == 1:
            sock.sendall(hello("nobody")[:9])
        elif n % 3 == 2:
            sock.sendall(hello("nobody"))
            assert read_frame(sock).startswith("PROMPT_OFF ")
        stalled.append(sock)
    try:
        started = time.monotonic()
        r = login(daemon, confdir, "alice", totp)
        assert r.rc == pd.PAM_SUCCESS, r
        assert time.monotonic() - started < 5  # generous; blocked would be >= 10 s
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.skipif(TEST_DATABASE != "sqlite", reason="locks the SQLite file")
def test_a_step_past_the_shims_budget_is_answered_by_the_watchdog(daemon):
    """timeout=1: the budget is 0.75 s, the store's busy wait 1 s. The verdict
    AUTHINFO_UNAVAIL comes before the shim's timeout, while the step still waits;
    once the lock is gone the same worker serves the next login."""
    totp = daemon.add_user("alice")
    sock = connect(daemon.pam_socket)
    sock.sendall(hello("alice", timeout=1))
    assert read_frame(sock) == "PROMPT_OFF Verification code: "
    with locked_database(daemon):
        sock.sendall(pam_wire.frame("ANSWER " + code_at(totp)))
        started = time.monotonic()
        verdict = read_frame(sock)
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # the stalled step ends (busy timeout) while the lock is held
    assert verdict == "VERDICT AUTHINFO_UNAVAIL"
    assert elapsed < 1.0  # within the shim's timeout=1 (the budget is 0.75 s)
    assert read_frame(sock) == ""  # and nothing after it
    sock.close()
    assert "a step stalled" in daemon.log.read_text()
    again = connect(daemon.pam_socket)
    again.sendall(hello("alice"))
    assert read_frame(again) == "PROMPT_OFF Verification code: "
    again.sendall(pam_wire.frame("ANSWER " + code_at(totp)))  # never accepted above
    assert read_frame(again).startswith("VERDICT SUCCESS")


@pytest.mark.skipif(TEST_DATABASE != "sqlite", reason="locks the SQLite file")
def test_every_worker_stuck_fails_the_others_closed_fast_with_one_log_line(daemon):
    """PAM_STEP_WORKERS logins wait on a locked database (1 s each); the ones
    behind them find no free worker and get AUTHINFO_UNAVAIL after QUEUE_WAIT
    (0.5 s), long before the shim's timeout, with one log line for all."""
    extra = 8
    names = [f"u{n}" for n in range(PAM_STEP_WORKERS + extra)]
    totps = {name: daemon.add_user(name) for name in names}
    socks = {}
    for name in names:
        socks[name] = connect(daemon.pam_socket)
        socks[name].sendall(hello(name))
    for name in names:
        assert read_frame(socks[name]) == "PROMPT_OFF Verification code: "
    with locked_database(daemon):
        started = time.monotonic()
        for name in names:
            socks[name].sendall(pam_wire.frame("ANSWER " + code_at(totps[name])))
        verdicts = [read_frame(socks[name]) for name in names]
        elapsed = time.monotonic() - started
    for sock in socks.values():
        sock.close()
    assert verdicts == ["VERDICT AUTHINFO_UNAVAIL"] * len(names)
    assert elapsed < 5  # the store's 1 s busy wait, queued ones 0.5 s: not the shim's 10 s
    log = daemon.log.read_text()
    assert log.count("no free worker") == 1, log


@pytest.mark.serial  # a stall of 1 s, and a verdict expected inside it
@pytest.mark.skipif(TEST_DATABASE != "sqlite", reason="locks the SQLite file")
def test_connections_made_during_a_stall_fail_closed_before_it_ends(daemon):
    """A login's step waits on a locked database (the store's busy wait, 1 s). New
    connections made meanwhile (inline: pam-io is in that step and cannot accept
    them; workers: a free worker serves them) get their verdict long before the
    stall ends and never wait for the shim's timeout. Inline, that verdict is
    AUTHINFO_UNAVAIL after QUEUE_WAIT; with workers, the code prompt at once."""
    stuck = daemon.add_user("stuck")
    daemon.add_user("late")
    sock = connect(daemon.pam_socket)
    sock.sendall(hello("stuck"))
    assert read_frame(sock) == "PROMPT_OFF Verification code: "
    with locked_database(daemon):
        sock.sendall(pam_wire.frame("ANSWER " + code_at(stuck)))
        time.sleep(0.1)  # the step is waiting on the lock
        started = time.monotonic()
        late = connect(daemon.pam_socket)
        late.sendall(hello("late"))
        first = read_frame(late)
        elapsed = time.monotonic() - started
        time.sleep(max(0.0, 1.2 - elapsed))
    assert read_frame(sock) == "VERDICT AUTHINFO_UNAVAIL"  # the stuck one fails closed too
    sock.close()
    late.close()
    if NO_SUCH_GROUP in daemon.config.get("exempt_groups", []):
        assert first == "PROMPT_OFF Verification code: "
        assert elapsed < QUEUE_WAIT
    else:
        assert first == "VERDICT AUTHINFO_UNAVAIL"
        assert elapsed < 0.85  # QUEUE_WAIT after the stall began, not its end (1 s)
        assert daemon.log.read_text().count("no free worker") == 1


def test_a_peer_that_never_finishes_its_hello_is_dropped_after_the_hello_timeout(daemon):
    """Half a HELLO, then silence: the watchdog drops the connection after
    HELLO_TIMEOUT (pam-io closes it, in either mode) and says so once."""
    sock = connect(daemon.pam_socket)
    sock.sendall(hello("nobody")[:9])
    started = time.monotonic()
    assert sock.recv(1) == b""  # closed, with no verdict
    elapsed = time.monotonic() - started
    sock.close()
    assert HELLO_TIMEOUT - 0.5 < elapsed < HELLO_TIMEOUT + 3
    assert daemon.log.read_text().count("PAM peer timed out") == 1


def test_jctotpd_stops_at_once_after_logins(daemon):
    """The watchdog thread ends when close() begins, whatever it was doing (it once
    cleared close()'s wake-up and held the stop for the 2 s join timeout)."""
    totp = daemon.add_user("alice")
    for code in ("000000", code_at(totp)):
        sock = connect(daemon.pam_socket)
        sock.sendall(hello("alice"))
        assert read_frame(sock) == "PROMPT_OFF Verification code: "
        sock.sendall(pam_wire.frame("ANSWER " + code))
        assert read_frame(sock).startswith("VERDICT ")
        sock.close()
    for _ in range(5):
        started = time.monotonic()
        daemon.stop()
        assert time.monotonic() - started < 1.5
        daemon.start()
