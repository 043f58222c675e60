"""Unanswered prompts never refuse a fresh login (issue 20 item 1), real libpam.

A conversation parked at a prompt waits for a person: it has a budget of its
own (per requester, and in all), apart from `max_connections`, which only
the logins being served fill. One requester (a remote host, or a local uid
running su) leaves 300 conversations at the password prompt, more than
`max_connections` (256): 4 other users still log in within their normal
time, and only that requester's newest conversations are refused. A full
waiting budget refuses the newest waiting conversation of the heaviest
requester, not the fresh login that needs a place.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pamdriver as pd
import pytest
from testlib import REPO, Daemon, code_at

pytestmark = pytest.mark.pam

PASSWORD = "correct horse battery"
STALLED = 300
USERS = 4
STALL = Path(__file__).with_name("stall.py")


class Stalled:
    """The stall.py helper: conversations left at their first prompt."""

    def __init__(self, confdir: str, svc: str, groups: list[str], ruid: int | None = None):
        argv = [sys.executable, str(STALL), confdir, svc, *groups]
        if ruid is not None:
            argv[4:4] = ["--ruid", str(ruid)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=STALL.parent,
                                     env={"PYTHONPATH": f"{STALL.parent}:{REPO}",
                                          **_env()})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("ready"), line
        self.prompted = int(line.split()[1])

    def answer(self, index: int, text: str = "wrong") -> str:
        """Answer conversation `index`; the PAM code it ended with."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"answer {index} {text}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().split()
        assert line[:2] == ["result", str(index)], line
        return line[2]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def budgets(daemon: Daemon) -> tuple[int, int]:
    """(waiting, per requester), as the daemon's start line says."""
    found = re.search(r"(\d+) waiting for a person \((\d+) per requester\)",
                      daemon.log.read_text())
    assert found, daemon.log.read_text()
    return int(found.group(1)), int(found.group(2))


def login(confdir: str, svc: str, user: str, totp, rhost: str, offset: float = 0.0
          ) -> pd.Result:
    """Password and code; `offset` +30: the next step's code (inside the window), newer
    than any an earlier login used (never a replay)."""
    return pd.run(confdir, svc, user, lambda m, _: PASSWORD if "password" in m.text
                  else code_at(totp, offset), rhost=rhost)


def logins(confdir: str, svc: str, totps: dict, rhost: str, offset: float = 0.0
           ) -> list[pd.Result]:
    """Every user at once, each from a host of its own."""
    results: dict[str, pd.Result] = {}
    threads = [threading.Thread(target=lambda u=u, i=i: results.__setitem__(
        u, login(confdir, svc, u, totps[u], f"{rhost}{i}", offset)))
        for i, u in enumerate(totps)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return [results[u] for u in totps]


@pytest.mark.parametrize("requester, processes", [("rhost", 1), ("uid", 1), ("rhost", 2)])
def test_300_prompts_left_by_one_requester_refuse_no_other_login(make_daemon, confdir,
                                                                 requester, processes):
    """With `pam_processes: 2` the budgets count per process (the kernel hands each
    connection to one), and so did max_connections: 300 a process, the oldest
    still waits, the newest was refused."""
    daemon = make_daemon(pam_processes=processes)
    count = STALLED * processes
    totps = {f"user{i}": daemon.add_user(f"user{i}") for i in range(USERS)}
    svc = pd.service(confdir, daemon, timeout=10)
    before = logins(confdir, svc, totps, "192.0.2.")
    assert [r.rc for r in before] == [pd.PAM_SUCCESS] * USERS, before
    normal = max(r.elapsed for r in before)
    if requester == "rhost":   # sshd: PAM runs as root, the requester is the remote host
        stalled = Stalled(confdir, svc, [f"198.51.100.66:{count}"])
    else:                      # su: the user's real uid, no PAM_RHOST
        stalled = Stalled(confdir, svc, [f"none:{count}"], ruid=4242)
    try:
        results = logins(confdir, svc, totps, "203.0.113.", offset=30)
        assert [r.name for r in results] == ["PAM_SUCCESS"] * USERS, results
        _, per_requester = budgets(daemon)
        # Only that requester's newest are refused: its first ones still wait, the
        # first one over its budget (and those after it) failed closed.
        oldest = stalled.answer(0)
        newest = stalled.answer(count - 1)
        if processes == 1:
            last_kept = stalled.answer(per_requester - 1)
            first_refused = stalled.answer(per_requester)
        else:
            last_kept, first_refused = oldest, newest
    finally:
        stalled.close()
    assert max(r.elapsed for r in results) < normal + 1.5, (normal, results)
    assert stalled.prompted == count
    assert (oldest, last_kept) == ("PAM_AUTH_ERR", "PAM_AUTH_ERR")   # ghost: an unknown name
    assert (first_refused, newest) == ("PAM_AUTHINFO_UNAVAIL", "PAM_AUTHINFO_UNAVAIL")
    refusals = [x for x in daemon.log.read_text().splitlines() if "waiting for a person" in x
                and "refused" in x]
    who = "rhost 198.51.100.66" if requester == "rhost" else "uid 4242"
    assert refusals and all(who in x for x in refusals), refusals
    assert len(refusals) <= 2 * processes, refusals   # once a minute, not per conversation


@pytest.fixture
def small_daemon(tmp_path_factory):
    """systemd's default descriptor limit (1,024): a waiting budget of a few hundred."""
    from testlib import daemon_config
    tmp = tmp_path_factory.mktemp("jctotpd")
    tmp.chmod(0o755)
    d = Daemon(tmp, daemon_config(tmp), nofile=1024).start()
    yield d
    d.stop()


def test_a_full_waiting_budget_refuses_the_heaviest_requesters_newest(small_daemon, confdir):
    daemon = small_daemon
    totp = daemon.add_user("alice")
    svc = pd.service(confdir, daemon, timeout=10)
    waiting, per = budgets(daemon)
    assert 2 * per < waiting <= 400, (waiting, per)
    # The heaviest (per) first, then others one fewer each, until the budget is full.
    groups, left, n = [f"198.51.100.1:{per}"], waiting - per, 2
    while left:
        take = min(per - 1, left)
        groups.append(f"198.51.100.{n}:{take}")
        left -= take
        n += 1
    stalled = Stalled(confdir, svc, groups)
    try:
        # A person types for a moment (an answer already there is never parked).
        fresh = pd.run(confdir, svc, "alice", lambda m, _: time.sleep(0.3) or (
            PASSWORD if "password" in m.text else code_at(totp)), rhost="203.0.113.9")
        heaviest_newest = stalled.answer(per - 1)
        heaviest_older = stalled.answer(per - 2)
        next_newest = stalled.answer(2 * per - 2)   # the second requester's newest
    finally:
        stalled.close()
    assert stalled.prompted == waiting
    assert fresh.rc == pd.PAM_SUCCESS, fresh
    log = daemon.log.read_text()
    assert heaviest_newest == "PAM_AUTHINFO_UNAVAIL", [x for x in log.splitlines()
                                                      if "refused" in x or "alice" in x]
    assert (heaviest_older, next_newest) == ("PAM_AUTH_ERR", "PAM_AUTH_ERR")
    assert "refused the newest of rhost 198.51.100.1" in log


def test_a_prompt_waits_answer_timeout_then_fails_closed(make_daemon, confdir):
    daemon = make_daemon(answer_timeout=10)
    totp = daemon.add_user("alice")
    svc = pd.service(confdir, daemon, timeout=5)
    started = time.monotonic()
    answered: list[float] = []

    def slow(message: pd.Message, _: list) -> str:
        if "password" in message.text:
            time.sleep(11)    # past answer_timeout: the daemon has closed the conversation
            answered.append(time.monotonic() - started)
            return PASSWORD
        return code_at(totp)

    late = pd.run(confdir, svc, "alice", slow, rhost="203.0.113.7")
    assert late.rc == pd.PAM_AUTHINFO_UNAVAIL, late
    assert answered and answered[0] >= 11
    assert "not answered within 10 s" in daemon.log.read_text()
    ok = pd.run(confdir, svc, "alice", lambda m, _: PASSWORD if "password" in m.text
                else code_at(totp), rhost="203.0.113.7")
    assert ok.rc == pd.PAM_SUCCESS, ok
