"""The control socket's budget (pam_jctotp/transport/limits.py, issue 9 items 2-4).

Everything a control connection may cost is decided from its uid before a
byte is read: connections per uid / all users / root, request size, read
buffer, answer time. The tables fit beside the PAM socket in the descriptor
limit; a full table is one log line per interval.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from testlib import REPO

from pam_jctotp.transport import control_wire, limits
from pam_jctotp.transport.limits import ControlLimits, Plan, Throttled, plan


@pytest.mark.parametrize("nofile", [256, 1024, 4096, 524288])
@pytest.mark.parametrize("pam", [1, 256, 1024])
def test_the_control_tables_leave_the_pam_socket_its_descriptors(nofile, pam):
    p = plan(nofile, pam)
    assert p.root >= 1  # an admin can always get in
    assert p.per_user <= limits.PER_USER and p.users <= limits.USERS and p.root <= limits.ROOT
    if nofile - limits.FILES_RESERVE - limits.ACCEPT_BURST - pam > p.root:
        assert (p.users + p.root + pam + limits.FILES_RESERVE + limits.ACCEPT_BURST
                <= nofile)


def test_systemds_default_of_1024_still_serves_users():
    p = plan(1024, 256)
    assert p.users >= 128 and p.per_user == limits.PER_USER and p.root == limits.ROOT


def test_connections_are_capped_per_uid_for_all_users_and_for_root_apart():
    lim = ControlLimits(Plan(users=5, root=2, per_user=3))
    assert [lim.admit(1001) for _ in range(3)] == [None] * 3
    assert "uid 1001" in (lim.admit(1001) or "")          # per uid
    assert lim.admit(1002) is None and lim.admit(1002) is None
    assert "user control connections" in (lim.admit(1003) or "")  # all users together
    assert lim.admit(0) is None and lim.admit(0) is None  # users filling up never lock root out
    assert "root" in (lim.admit(0) or "")
    lim.release(1001)
    assert lim.admit(1003) is None
    for uid in (1001, 1001, 1002, 1002, 1003, 0, 0):
        lim.release(uid)
    assert lim.users_open == 0 and not lim.open


def test_users_get_small_messages_buffers_and_answer_times_root_keeps_todays():
    assert ControlLimits.message_limit(0) == control_wire.MAX_MESSAGE
    assert ControlLimits.message_limit(1000) <= 4096
    assert ControlLimits.read_limit(1000) <= 2 * ControlLimits.message_limit(1000)
    assert ControlLimits.read_limit(0) < control_wire.MAX_MESSAGE  # grows only as data comes
    assert ControlLimits.answer_timeout(1000) <= 120 < ControlLimits.answer_timeout(0)
    assert ControlLimits.first_message_timeout(1000) <= ControlLimits.first_message_timeout(0)


def test_throttled_says_it_once_per_interval_then_counts(caplog, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: now[0])
    t = Throttled(logging.getLogger("test_limits"), interval=60)
    with caplog.at_level(logging.WARNING, "test_limits"):
        for _ in range(500):
            t.say(("full", 1001), "table full for uid 1001")
        t.say(("full", 1002), "table full for uid 1002")
        now[0] += 61
        t.say(("full", 1001), "table full for uid 1001")
    assert [r.getMessage() for r in caplog.records] == [
        "table full for uid 1001", "table full for uid 1002",
        "table full for uid 1001 (and 499 more like it since)"]


def test_the_daemon_raises_its_soft_descriptor_limit_to_the_hard_one():
    """systemd starts services with a soft limit of 1,024; the daemon takes what it may."""
    script = ("import resource\n"
              "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))\n"
              "from pam_jctotp.daemon import raise_fd_limit\n"
              "print(raise_fd_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.stdout.split() == ["4096", "4096", "4096"]
