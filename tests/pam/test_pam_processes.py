"""`pam_processes: 2`: jctotpd and a child serve one PAM socket (pam_processes.py).

What the processes share must hold as in one process: a code is accepted
once, a counter never lets more than max_attempts through (real and unknown
names alike), a killed child is replaced and its logins fail closed, and the
child never outlives jctotpd. Raw protocol clients (docs/protocol.md), many
at once, so that both processes serve.
"""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pamdriver as pd
import pytest
import testlib
from test_pam_workers import connect, hello, read_frame
from testlib import code_at

from pam_jctotp.transport import pam_wire

pytestmark = pytest.mark.pam


def pam_children(daemon) -> list[int]:
    """jctotpd's PAM processes (read from /proc: see testlib.children)."""
    found = []
    for pid in testlib.children(daemon.proc.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"pam_jctotp.daemon.processes" in fh.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def wait_serving(daemon, count: int = 1, timeout: float = 20) -> None:
    """Until `count` "PAM process ... serving" lines are in the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.log.read_text().count(" serving (pid ") >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no PAM process serving: {daemon.log.read_text()}")


@pytest.fixture
def daemon(make_daemon):
    d = make_daemon(pam_processes=2)
    wait_serving(d)
    return d


def raw_login(path: str, user: str, code: str) -> str:
    """One factors=totp login: the verdict (or what came instead of the prompt)."""
    sock = connect(path)
    try:
        sock.sendall(hello(user))
        prompt = read_frame(sock)
        while prompt.startswith(("ERROR ", "INFO ")):
            prompt = read_frame(sock)
        if not prompt.startswith("PROMPT_OFF "):
            return prompt
        sock.sendall(pam_wire.frame("ANSWER " + code))
        frame = read_frame(sock)
        while frame.startswith(("ERROR ", "INFO ")):
            frame = read_frame(sock)
        return frame.removeprefix("VERDICT ").split("\n")[0].split(" ")[0]
    finally:
        sock.close()


def at_once(n: int, fn, *args) -> list[str]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: fn(*args), range(n)))


def test_two_processes_serve_the_socket_and_every_login_is_right(daemon, confdir):
    kids = pam_children(daemon)
    assert len(kids) == 1
    names = [f"p{n}" for n in range(60)]
    totps = {name: daemon.add_user(name) for name in names}
    with ThreadPoolExecutor(6) as pool:
        verdicts = list(pool.map(lambda n: raw_login(daemon.pam_socket, n, code_at(totps[n])),
                                 names))
    assert verdicts == ["SUCCESS"] * len(names)
    served_by = set(re.findall(r"jctotpd\[(\d+)\]: INFO auth totp user=p\d+ .* -> SUCCESS",
                               daemon.log.read_text()))
    assert served_by == {str(daemon.proc.pid), str(kids[0])}
    # and through libpam and the shim, as sshd would
    alice = daemon.add_user("alice")
    pd.write_service(confdir, "jctotp-procs",
                     [f"auth required {pd.SHIM} socket={daemon.pam_socket} factors=totp"])
    assert pd.run(confdir, "jctotp-procs", "alice", [code_at(alice)]).rc == pd.PAM_SUCCESS


def test_a_code_is_accepted_once_over_both_processes(make_daemon):
    daemon = make_daemon(pam_processes=2, max_attempts=100)
    wait_serving(daemon)
    totp = daemon.add_user("alice")
    code = code_at(totp)
    verdicts = at_once(24, raw_login, daemon.pam_socket, "alice", code)
    assert sorted(verdicts) == ["AUTH_ERR"] * 23 + ["SUCCESS"]


def test_wrong_guesses_over_both_processes_stop_at_max_attempts(make_daemon):
    daemon = make_daemon(pam_processes=2, max_attempts=5)
    wait_serving(daemon)
    daemon.add_user("alice")
    verdicts = at_once(24, raw_login, daemon.pam_socket, "alice", "000000")
    assert verdicts.count("AUTH_ERR") <= 5 and verdicts.count("SUCCESS") == 0
    assert verdicts.count("AUTH_ERR") + verdicts.count("MAXTRIES") == 24
    assert daemon.user("alice")["locked"]


def test_an_unknown_name_locks_after_max_attempts_over_both_processes(make_daemon):
    """Its counter is in state_dir/unknown-names.db, shared: per process, 24 guesses
    split over two processes would get up to 2 x 3 checks, and the difference from
    a real name (exactly 3) would tell that the name does not exist."""
    daemon = make_daemon(pam_processes=2, max_attempts=3)
    wait_serving(daemon)
    verdicts = at_once(24, raw_login, daemon.pam_socket, "ghost", "000000")
    assert verdicts.count("AUTH_ERR") == 3, verdicts
    assert verdicts.count("MAXTRIES") == 21, verdicts


def test_a_killed_process_is_replaced_and_logins_go_on(daemon):
    totp = daemon.add_user("alice")
    (kid,) = pam_children(daemon)
    os.kill(kid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and pam_children(daemon) in ([], [kid]):
        time.sleep(0.05)
    (new,) = pam_children(daemon)
    assert new != kid
    wait_serving(daemon, 2)
    log = daemon.log.read_text()
    assert f"PAM process 1 (pid {kid}) exited with signal 9" in log
    assert raw_login(daemon.pam_socket, "alice", code_at(totp)) == "SUCCESS"


def test_the_child_goes_with_jctotpd_even_after_kill_9(daemon):
    (kid,) = pam_children(daemon)
    daemon.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{kid}"):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{kid}")


def test_sighup_reaches_the_child(daemon):
    (kid,) = pam_children(daemon)
    os.kill(daemon.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if f"jctotpd[{kid}]: INFO reloaded" in daemon.log.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(daemon.log.read_text())


def test_pam_processes_is_checked(tmp_path):
    from pam_jctotp import config
    from pam_jctotp.errors import ConfigError
    with pytest.raises(ConfigError, match="pam_processes"):
        config.parse({"pam_processes": 0})
    with pytest.raises(ConfigError, match="pam_processes"):
        config.parse({"pam_processes": 99})
    assert config.parse({"pam_processes": 4}).pam_processes == 4
