"""Nothing one login or one admin does stalls the others (issues 9 and 10), real libpam.

- a slow `useradd` (a stub on the daemon's PATH that sleeps 5 s) runs in the
  control pool: a login completes meanwhile;
- a state database locked by another process (BEGIN EXCLUSIVE) fails one
  login fast (AUTHINFO_UNAVAIL, well inside the shim's timeout); once the
  lock is gone the next login succeeds.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pamdriver as pd
import pytest
from testlib import TEST_DATABASE, Daemon, code_at, daemon_config

pytestmark = pytest.mark.pam

PASSWORD = "correct horse battery"
USERADD_SLEEP = 5.0
SHIM_TIMEOUT = 10


@pytest.fixture
def slow_useradd_daemon(tmp_path_factory):
    """A daemon whose `useradd` is a stub that sleeps (and `usermod` one that does nothing)."""
    tmp = tmp_path_factory.mktemp("jctotpd")
    tmp.chmod(0o755)
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    started = tmp / "useradd-started"
    (bin_dir / "useradd").write_text(f"#!/bin/sh\ntouch {started}\nsleep {USERADD_SLEEP}\n")
    (bin_dir / "usermod").write_text("#!/bin/sh\nexit 0\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    d = Daemon(tmp, daemon_config(tmp, create_system_accounts=True),
               env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}).start()
    d.useradd_started = started  # type: ignore[attr-defined]
    yield d
    d.stop()


def test_a_login_completes_while_useradd_of_another_user_is_slow(slow_useradd_daemon, confdir):
    daemon = slow_useradd_daemon
    totp = daemon.add_user("alice")  # system_account=False: no useradd
    svc = pd.service(confdir, daemon, timeout=SHIM_TIMEOUT)
    added: dict = {}
    adder = threading.Thread(target=lambda: added.update(
        result=daemon.request("user.add", name="slowpoke", password=PASSWORD)))
    began = time.monotonic()
    adder.start()
    while not daemon.useradd_started.exists():
        assert time.monotonic() - began < 10, "the stub useradd never ran"
        time.sleep(0.02)
    r = pd.run(confdir, svc, "alice", [PASSWORD, code_at(totp)])
    login_done = time.monotonic() - began
    assert r.rc == pd.PAM_SUCCESS, r
    assert adder.is_alive()  # useradd still sleeping: the login did not wait for it
    assert login_done < USERADD_SLEEP - 2  # well before it ends (argon2 + two round trips)
    adder.join(30)
    assert added["result"].exit == 0, added["result"].message
    assert time.monotonic() - began >= USERADD_SLEEP


@pytest.mark.skipif(TEST_DATABASE != "sqlite", reason="locks the SQLite file")
def test_a_locked_database_fails_one_login_fast_then_the_next_succeeds(daemon, confdir):
    totp = daemon.add_user("alice")
    svc = pd.service(confdir, daemon, timeout=SHIM_TIMEOUT)
    holder = sqlite3.connect(Path(daemon.config["state_dir"]) / "jctotp.db",
                             isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        r = pd.run(confdir, svc, "alice", [PASSWORD, code_at(totp)])
        elapsed = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.rc == pd.PAM_AUTHINFO_UNAVAIL, r
    assert elapsed < 3.0 < SHIM_TIMEOUT  # the 1 s busy timeout, not the shim's timeout
    assert "failed closed" in daemon.log.read_text()
    again = pd.run(confdir, svc, "alice", [PASSWORD, code_at(totp)])
    assert again.rc == pd.PAM_SUCCESS, again
