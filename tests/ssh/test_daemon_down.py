"""Fail closed: with jctotpd stopped or hung, logins are refused within the
shim's timeout (10 s by default), sshd keeps serving, and logins work again
once the daemon is back."""

from __future__ import annotations

import socket
import time
from datetime import datetime

import pytest
from sshlib import finish

SHIM_TIMEOUT = 10  # the shim's default timeout=


@pytest.fixture(scope="module")
def s(fresh_sshd):
    return fresh_sshd("password")


def timed_login(s, name, password, code):
    start = time.monotonic()
    child = s.ssh(name, "echo ran-as-$(id -un)")
    # The daemon asks for the password: with no daemon there is no prompt.
    i = child.expect_exact(["Directory password: ", "Permission denied"], timeout=SHIM_TIMEOUT + 10)
    if i == 0:
        child.sendline(password)
        child.expect_exact("Verification code: ")
        child.sendline(code)
    r = finish(child, timeout=SHIM_TIMEOUT + 10)
    return r, time.monotonic() - start


def test_daemon_stopped_refuses_fast_then_recovers(s):
    totp = s.add_user("tom", "tom-pass-1")
    s.ok("jctotpd-service stop")
    try:
        r, took = timed_login(s, "tom", "tom-pass-1", totp.fresh())
        assert not r.ok and "ran-as-" not in r.output
        assert took < SHIM_TIMEOUT
    finally:
        s.ok("jctotpd-service start")
    r, _ = timed_login(s, "tom", "tom-pass-1", totp.fresh())
    assert r.ok and "ran-as-tom" in r.output, r.output


def test_daemon_hung_refuses_within_the_timeout_and_sshd_keeps_serving(s):
    totp = s.add_user("uma", "uma-pass-1")
    s.ok("kill -STOP $(cat /run/jctotp/jctotpd.pid)")
    try:
        start = time.time()
        hung = s.ssh("uma", "true")  # stuck in the shim while the daemon is hung
        time.sleep(1)
        # sshd still accepts and greets the next client meanwhile.
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as other:
            assert other.recv(64).startswith(b"SSH-2.0-")
        r = finish(hung, timeout=3 * SHIM_TIMEOUT)
        refused = time.time() - start
        assert not r.ok
        # The shim gave up after its timeout: sshd logs PAM's answer then.
        assert pam_gave_up(s, "uma", since=start) - start < SHIM_TIMEOUT + 1.5
        # sshd then pads every failure to a per-user base delay doubled until
        # it exceeds the time spent (auth2.c, ensure_minimum_time_since), so
        # the client hears "Permission denied" between 1x and 2x the timeout.
        assert refused < 2 * SHIM_TIMEOUT + 3
    finally:
        s.ok("kill -CONT $(cat /run/jctotp/jctotpd.pid)")
    r, _ = timed_login(s, "uma", "uma-pass-1", totp.fresh())
    assert r.ok, r.output


def pam_gave_up(s, user: str, since: float) -> float:
    """When sshd logged that PAM could not reach the daemon (epoch seconds)."""
    logs = s.container.logs(timestamps=True, since=int(since) - 1).decode()
    for line in logs.splitlines():
        if f"cannot retrieve authentication info for {user}" in line:
            stamp = line.split()[0]  # 2026-11-24T14:53:41.123456789Z
            return datetime.fromisoformat(stamp[:26] + "+00:00").timestamp()
    raise AssertionError(f"sshd did not log the PAM failure:\n{logs}")
