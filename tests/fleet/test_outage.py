"""The fleet database goes away and comes back (issue 13): stopped, or frozen.

While the database does not answer, every login fails closed
(PAM_AUTHINFO_UNAVAIL) within the shim's `timeout=`, the daemon logs ONE line
for the whole outage (not one per login), and once the outage is known a login
fails at once instead of waiting on the database again. A probe in the
background notices the database's return by itself (no login needed, no
restart), logs ONE "back" line, and logins work again.

A frozen server (SIGSTOP of the postmaster and every backend: the kernel still
accepts connections and ACKs, nobody answers) is the hard case: only a
client-side deadline gets a login out of it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pamdriver as pd
import pytest
from fleetlib import service
from testlib import code_at

pytestmark = pytest.mark.fleet

PASSWORD = "correct horse battery"
TIMEOUT = 5          # the shim's timeout= in these tests
N = 10               # logins during the outage
UNAVAILABLE = "fleet database"   # both outage lines name it ...
DOWN, BACK = "unavailable:", "back after"   # ... and say this


def lines(host, marker: str) -> int:
    return sum(UNAVAILABLE in ln and marker in ln for ln in host.log.read_text().splitlines())


def copied(copy: Path) -> list[str]:
    with sqlite3.connect(f"file:{copy}?mode=ro", uri=True) as db:
        return [r[0] for r in db.execute("SELECT name FROM users")]


def wait_for(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def logins_during_outage(confdir, host, svc, totp):
    """N logins at once, then N one after the other (the outage is known by then)."""
    with ThreadPoolExecutor(max_workers=N) as pool:
        together = list(pool.map(lambda i: pd.run(confdir, svc, "alice",
                                                  [PASSWORD, code_at(totp)]), range(N)))
    after = [pd.run(confdir, svc, "alice", [PASSWORD, code_at(totp)]) for _ in range(N)]
    for r in together + after:
        assert r.rc == pd.PAM_AUTHINFO_UNAVAIL, r
        assert r.elapsed < TIMEOUT, r
    # fail fast: a known outage costs a login no wait on the database
    assert max(r.elapsed for r in after) < 1.0, [round(r.elapsed, 2) for r in after]
    assert lines(host, DOWN) == 1, host.log.read_text()   # one line for 2N logins ...
    assert "stalled" not in host.log.read_text()   # ... and none waited out its deadline


def recovers_by_itself(confdir, host, svc, totp):
    """The probe sees the database back without any login; then logins work."""
    assert wait_for(lambda: lines(host, BACK) == 1, 15), host.log.read_text()
    host.set_clock(30)
    r = pd.run(confdir, svc, "alice", [PASSWORD, code_at(totp, 30)])
    assert r.rc == pd.PAM_SUCCESS, r
    assert lines(host, DOWN) == 1 and lines(host, BACK) == 1


@pytest.mark.serial   # a known outage must fail a login within 1 s
def test_stopped_database_one_line_fail_fast_and_back_by_itself(make_host, confdir, pg):
    a = make_host("a", max_attempts=100)
    totp = a.add_user("alice")
    svc = service(confdir, a, timeout=TIMEOUT)
    assert pd.run(confdir, svc, "alice", [PASSWORD, code_at(totp)]).rc == pd.PAM_SUCCESS
    pg.stop()
    logins_during_outage(confdir, a, svc, totp)
    found = {f["what"]: f["level"] for f in json.loads(a.cli("doctor", "--json").stdout)}
    down = [w for w, lvl in found.items() if lvl == "fail" and w.startswith(UNAVAILABLE)]
    assert down and all(w.count(UNAVAILABLE) == 1 for w in down), found   # said once
    pg.start()
    recovers_by_itself(confdir, a, svc, totp)


@pytest.mark.serial
def test_frozen_database_fails_closed_within_timeout_and_back_on_thaw(make_host, confdir, pg):
    a = make_host("a", max_attempts=100)
    totp = a.add_user("alice")
    svc = service(confdir, a, timeout=TIMEOUT)
    assert pd.run(confdir, svc, "alice", [PASSWORD, code_at(totp)]).rc == pd.PAM_SUCCESS
    pg.freeze()   # the postmaster and its backends: one process group
    try:
        logins_during_outage(confdir, a, svc, totp)
        time.sleep(3)   # probes against the frozen server time out; still one line
        assert lines(a, DOWN) == 1 and lines(a, BACK) == 0
    finally:
        pg.thaw()
    recovers_by_itself(confdir, a, svc, totp)


def test_a_daemon_started_during_an_outage_serves_break_glass_and_recovers(
        make_host, confdir, pg, scratch_accounts):
    """A host that (re)starts while the database is down: it starts (so the PAM
    socket answers AUTHINFO_UNAVAIL instead of being absent), serves its
    break-glass group from the copy an earlier run left, fails everyone else
    closed, and once the database answers checks the schema and the key and
    serves everyone, with no restart."""
    prefix = scratch_accounts
    group = f"{prefix}bg"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-G", group, f"{prefix}ops"], check=True)
    a = make_host("a", max_attempts=100, break_glass_group=group)
    ops, alice = a.add_user(f"{prefix}ops"), a.add_user("alice")
    copy = Path(a.config["state_dir"]) / "break-glass.db"
    assert wait_for(lambda: copy.exists() and copied(copy) == [f"{prefix}ops"], 10)
    a.stop()
    pg.stop()
    a.start()                                       # the database is down: starts anyway
    assert lines(a, DOWN) == 1, a.log.read_text()
    svc = service(confdir, a, timeout=TIMEOUT)
    r = pd.run(confdir, svc, "alice", [PASSWORD, code_at(alice)])
    assert r.rc == pd.PAM_AUTHINFO_UNAVAIL and r.elapsed < TIMEOUT, r
    r = pd.run(confdir, svc, f"{prefix}ops", [PASSWORD, code_at(ops)])
    assert r.rc == pd.PAM_SUCCESS, r                 # break-glass from the copy
    pg.start()
    assert wait_for(lambda: lines(a, BACK) == 1, 15), a.log.read_text()
    a.set_clock(30)
    assert pd.run(confdir, svc, "alice",
                  [PASSWORD, code_at(alice, 30)]).rc == pd.PAM_SUCCESS
    assert lines(a, DOWN) == 1


def test_a_daemon_started_during_an_outage_checks_the_key_when_it_returns(
        make_host, confdir, pg):
    a = make_host("a", max_attempts=100)
    alice = a.add_user("alice")
    a.stop()
    Path(a.config["secret_key_file"]).write_bytes(bytes(range(32)))   # not the fleet's key
    pg.stop()
    a.start()
    pg.start()
    # the database answers, the key does not match: refused, said once, no login served
    assert wait_for(lambda: "key check mismatch" in a.log.read_text(), 15), a.log.read_text()
    time.sleep(2)
    assert a.log.read_text().count("key check mismatch") == 1
    r = pd.run(confdir, service(confdir, a, timeout=TIMEOUT), "alice",
               [PASSWORD, code_at(alice)])
    assert r.rc == pd.PAM_AUTHINFO_UNAVAIL, r
    assert lines(a, BACK) == 0
