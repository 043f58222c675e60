"""What each host keeps locally from the fleet database (issue 13): lock markers,
Linux accounts of directory users, and the break-glass copy for a database outage.

Linux accounts and groups made here carry a prefix of the test's own (the
scratch_accounts fixture: `jcfl<pid>t<n>_`, so tests on several xdist workers
never touch each other's) and are removed after each test (the test runs as
root on a throw-away machine or container).
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pamdriver as pd
import pytest
from fleetlib import service
from testlib import code_at, eventually

from pam_jctotp.errors import StoreUnavailable
from pam_jctotp.fleet.breakglass import MATCHED, WARN_EVERY, BreakGlassStore, write_matched
from pam_jctotp.store.sqlite import SqliteStore

pytestmark = pytest.mark.fleet

PASSWORD = "correct horse battery"


def test_lock_markers_follow_the_database_on_every_host(make_host, confdir):
    a = make_host("a", max_attempts=2, unlock_after=0)
    b = make_host("b", max_attempts=2, unlock_after=0)
    a.add_user("alice")
    marker = Path(b.config["state_dir"]) / "locked" / "alice"
    for _ in range(2):
        pd.run(confdir, service(confdir, a), "alice", ["wrong password", "000000"])
    assert a.user("alice")["locked"]
    assert eventually(marker.exists, 5)            # locked on A: marked on B (NOTIFY)
    b.stop()
    svc = "open-b"
    pd.write_service(confdir, svc, [
        f"auth required {pd.SHIM} socket={b.pam_socket} failmode=open "
        f"lockdir={marker.parent}", "auth required pam_permit.so"])
    # B's daemon is down: failmode=open lets bob through, never alice (locked on A)
    assert pd.run(confdir, svc, "alice", [PASSWORD, "000000"]).rc == pd.PAM_AUTHINFO_UNAVAIL
    assert pd.run(confdir, svc, "bob", [PASSWORD, "000000"]).rc == pd.PAM_SUCCESS
    b.start()
    a.ok("unlock", names=["alice"])
    assert eventually(lambda: not marker.exists(), 5)


def test_system_accounts_follow_the_directory_and_only_ours(make_host, scratch_accounts):
    prefix = scratch_accounts
    a = make_host("a")
    b = make_host("b", create_system_accounts=True)
    registry = Path(b.config["state_dir"]) / "system-accounts"
    subprocess.run(["useradd", f"{prefix}pre"], check=True)    # not made by jctotpd
    def shadow(name: str) -> list[str]:
        line = next(ln for ln in Path("/etc/shadow").read_text().splitlines()
                    if ln.startswith(name + ":"))
        return line.split(":")

    pre = shadow(f"{prefix}pre")
    a.add_user(f"{prefix}alice")
    a.add_user(f"{prefix}pre")
    assert eventually(lambda: f"{prefix}alice" in {p.pw_name for p in pwd.getpwall()})
    assert eventually(lambda: registry.exists() and
                      registry.read_text().split() == [f"{prefix}alice"])
    a.ok("user.remove", name=f"{prefix}alice")
    a.ok("user.remove", name=f"{prefix}pre")

    assert eventually(lambda: shadow(f"{prefix}alice")[1].startswith("!"))
    assert shadow(f"{prefix}alice")[7] == "1"                   # expired: no key login
    assert shadow(f"{prefix}pre") == pre                        # never touched
    a.add_user(f"{prefix}alice")                                # back in the directory
    assert eventually(lambda: not shadow(f"{prefix}alice")[1].startswith("!"))
    assert shadow(f"{prefix}alice")[7] == ""



def test_a_lock_made_while_a_host_is_down_is_marked_before_it_serves(make_host, confdir):
    """B's daemon is stopped while A locks alice: B's lockdir cannot know. When B
    starts, the markers follow the database before its PAM socket accepts anyone."""
    a = make_host("a", max_attempts=2, unlock_after=0)
    b = make_host("b", max_attempts=2, unlock_after=0)
    totp = a.add_user("alice")
    marker = Path(b.config["state_dir"]) / "locked" / "alice"
    b.stop()
    for _ in range(2):
        pd.run(confdir, service(confdir, a), "alice", ["wrong password", code_at(totp)])
    assert a.user("alice")["locked"] and not marker.exists()
    seen: list[bool] = []   # marker.exists() when B's PAM socket first accepted
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                try:
                    sock.connect(b.pam_socket)
                except OSError:      # no socket yet, or nobody listens: failmode=open's case
                    time.sleep(0.001)
                    continue
                seen.append(marker.exists())
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        b.start()
        watcher.join(10)
    finally:
        stop.set()
        watcher.join()
    assert seen == [True]

@pytest.mark.parametrize("outage", ["stop", "freeze"])
def test_break_glass_works_during_an_outage_and_only_for_its_group(
        make_host, confdir, pg, scratch_accounts, outage):
    prefix = scratch_accounts
    group = f"{prefix}bg"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-G", group, f"{prefix}ops"], check=True)
    subprocess.run(["useradd", f"{prefix}dev"], check=True)
    a = make_host("a")
    b = make_host("b", break_glass_group=group)
    ops, dev = a.add_user(f"{prefix}ops"), a.add_user(f"{prefix}dev")
    copy = Path(b.config["state_dir"]) / "break-glass.db"

    def copied() -> list[str]:
        if not copy.exists():
            return []
        with sqlite3.connect(f"file:{copy}?mode=ro", uri=True) as db:
            return [r[0] for r in db.execute("SELECT name FROM users")]

    assert eventually(lambda: copied() == [f"{prefix}ops"])     # the group only
    assert oct(copy.stat().st_mode & 0o777) == "0o600"
    svc_a, svc_b = service(confdir, a, timeout=5), service(confdir, b, timeout=5)
    getattr(pg, outage)()    # stopped, or frozen (SIGSTOP: connections hang, no error)
    code = code_at(ops)
    r = pd.run(confdir, svc_b, f"{prefix}ops", [PASSWORD, code])
    assert r.rc == pd.PAM_SUCCESS, r                           # break-glass on B
    # one WARNING for the login, not one per read of the user (auth + account)
    assert b.log.read_text().count("is served from this host's copy") == 1
    # the same code again (not code_at() again: a step boundary may have passed)
    assert pd.run(confdir, svc_b, f"{prefix}ops",
                  [PASSWORD, code]).rc == pd.PAM_AUTH_ERR     # still single-use
    assert pd.run(confdir, svc_b, f"{prefix}ops",
                  ["wrong password", code_at(ops, 30)]).rc == pd.PAM_AUTH_ERR
    assert pd.run(confdir, svc_b, f"{prefix}dev",
                  [PASSWORD, code_at(dev)]).rc == pd.PAM_AUTHINFO_UNAVAIL  # not in the group
    assert pd.run(confdir, svc_a, f"{prefix}ops",
                  [PASSWORD, code_at(ops)]).rc == pd.PAM_AUTHINFO_UNAVAIL  # A has no group
    assert "break-glass" in b.log.read_text()
    pg.healthy()
    os.sync()


def test_a_partitioned_host_refuses_a_break_glass_copy_past_its_maximum_age(
        make_host, confdir, pg, scratch_accounts):
    """The copy holds what the database said when it last matched; a member removed,
    or whose password or MFA was reset, meanwhile would still get in with the old
    ones. So a copy older than break_glass_max_age (default 4 h) is refused: one
    line, an audit event, fail closed."""
    prefix = scratch_accounts
    group = f"{prefix}bg"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-G", group, f"{prefix}ops"], check=True)
    a = make_host("a")
    b = make_host("b", break_glass_group=group)
    ops = a.add_user(f"{prefix}ops")
    copy = Path(b.config["state_dir"]) / "break-glass.db"
    assert eventually(lambda: copy.exists() and _copied(copy) == [f"{prefix}ops"])
    svc = service(confdir, b, timeout=5)
    pg.stop()                                   # B is cut off from the database
    r = pd.run(confdir, svc, f"{prefix}ops", [PASSWORD, code_at(ops)])
    assert r.rc == pd.PAM_SUCCESS, r            # a fresh copy: break-glass
    later = 14400 + 60                          # past the default maximum age
    b.set_clock(later)
    for n in (0, 30):
        r = pd.run(confdir, svc, f"{prefix}ops", [PASSWORD, code_at(ops, later + n)])
        assert r.rc == pd.PAM_AUTHINFO_UNAVAIL, r
    log = b.log.read_text()
    assert log.count("break_glass_max_age") == 1, log      # one line, not one per login
    refused = [e for e in b.audit_events() if e["event"] == "break_glass_refused"]
    assert [e["user"] for e in refused] == [f"{prefix}ops"] * 2, refused
    pg.healthy()


def test_a_lower_break_glass_max_age_applies_at_a_reload(make_host, confdir, pg,
                                                        scratch_accounts):
    """During a partition an administrator on the host shortens the copy's life:
    SIGHUP, no restart (a restart during the outage would also work, but slower)."""
    prefix = scratch_accounts
    group = f"{prefix}bg"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-G", group, f"{prefix}ops"], check=True)
    a = make_host("a")
    b = make_host("b", break_glass_group=group)
    ops = a.add_user(f"{prefix}ops")
    copy = Path(b.config["state_dir"]) / "break-glass.db"
    assert eventually(lambda: copy.exists() and _copied(copy) == [f"{prefix}ops"])
    svc = service(confdir, b, timeout=5)
    pg.stop()
    b.set_clock(120)                            # two minutes into the partition
    r = pd.run(confdir, svc, f"{prefix}ops", [PASSWORD, code_at(ops, 120)])
    assert r.rc == pd.PAM_SUCCESS, r
    b.config["break_glass_max_age"] = 60
    b.write_config()
    b.proc.send_signal(signal.SIGHUP)
    assert eventually(lambda: "reloaded" in b.log.read_text())
    b.set_clock(150)
    r = pd.run(confdir, svc, f"{prefix}ops", [PASSWORD, code_at(ops, 150)])
    assert r.rc == pd.PAM_AUTHINFO_UNAVAIL, r
    assert "break_glass_max_age (60 s)" in b.log.read_text()
    pg.healthy()


def _copied(copy: Path) -> list[str]:
    """The users the copy holds with their key: a refresh may copy a user made a moment
    ago before their enrollment (no key yet), and only a later one brings the key."""
    with sqlite3.connect(f"file:{copy}?mode=ro", uri=True) as db:
        return [r[0] for r in db.execute("SELECT name FROM users WHERE totp_secret IS NOT NULL")]


def test_break_glass_warns_once_per_user_per_outage_minute(tmp_path, caplog):
    """Many reads and counters of one user in an outage: one WARNING a minute; the
    database back and down again: a new outage, a new line."""
    class Fleet:
        down = True

        def __getattr__(self, attr):
            def call(name, *args):
                if self.down:
                    raise StoreUnavailable("fleet database down")
                return getattr(copy, attr)(name, *args)
            return call

    copy = SqliteStore(tmp_path / "break-glass.db")
    copy.add("ops", is_admin=False, password_hash=None, now=0.0)
    fleet, now = Fleet(), [1000.0]
    matched = tmp_path / MATCHED
    write_matched(matched, time.time())
    store = BreakGlassStore(fleet, copy, matched, max_age=14400, clock=lambda: now[0])

    def lines() -> int:
        return sum("ops is served from this host's copy" in r.getMessage()
                   for r in caplog.records)

    def login() -> None:   # what a password + code login and its account phase call
        store.get("ops")
        store.reserve_attempt("ops", now[0], 60, 100)
        store.get("ops")
        store.accept_step("ops", int(now[0]) // 30, True)
        store.get("ops")

    caplog.set_level("WARNING", logger="jctotpd.breakglass")
    login()
    assert lines() == 1
    now[0] += WARN_EVERY - 1
    login()
    assert lines() == 1                      # the same minute of the outage
    now[0] += 1
    login()
    assert lines() == 2                      # a minute later: once more
    with pytest.raises(StoreUnavailable):
        store.get("dev")                     # not in the copy: fails closed, no line
    assert lines() == 2
    fleet.down = False
    store.get("ops")                         # the database is back
    fleet.down = True
    login()
    assert lines() == 3                      # a new outage warns at once


def ops_and_dev(make_host, prefix: str, pg_uri: str, listed: list[str]):
    """Two users of a break-glass group; host A (the owner), host B (a host role) started
    after `fleet break-glass` lists `listed`: (a, b, (ops's totp, dev's))."""
    group = f"{prefix}bg"
    subprocess.run(["groupadd", group], check=True)
    for name in ("ops", "dev"):
        subprocess.run(["useradd", "-G", group, f"{prefix}{name}"], check=True)
    a = make_host("a")
    b = make_host("b", role=True, break_glass_group=group, start=False)
    totps = a.add_user(f"{prefix}ops"), a.add_user(f"{prefix}dev")
    done = a.cli("fleet", "break-glass", "--admin-database", pg_uri,
                 *[f"{prefix}{n}" for n in listed])
    assert done.returncode == 0, done.stderr
    b.start()
    return a, b, totps


def test_a_host_role_copies_only_the_keys_the_owner_listed(make_host, confdir, pg, pg_uri,
                                                           scratch_accounts):
    """Issue 22: a host role reads no key, except through jctotp_break_glass_keys, for
    the users `jctotp fleet break-glass` listed; a group member the owner did not list
    is left out of the copy (fails closed in an outage), never copied without a key."""
    prefix = scratch_accounts
    a, b, (ops, dev) = ops_and_dev(make_host, prefix, pg_uri, ["ops"])
    copy = Path(b.config["state_dir"]) / "break-glass.db"
    assert eventually(lambda: copy.exists() and _copied(copy) == [f"{prefix}ops"])
    svc_b = service(confdir, b, timeout=5)
    pg.stop()
    assert pd.run(confdir, svc_b, f"{prefix}ops",
                  [PASSWORD, code_at(ops)]).rc == pd.PAM_SUCCESS
    assert pd.run(confdir, svc_b, f"{prefix}dev",
                  [PASSWORD, code_at(dev)]).rc == pd.PAM_AUTHINFO_UNAVAIL
    pg.healthy()


def test_fleet_break_glass_wakes_the_hosts(make_host, pg_uri, scratch_accounts):
    """`jctotp fleet break-glass` notifies the fleet, as a user's change does: B's copy
    drops a member the owner took off the list within seconds, not at its periodic
    resync (sync.RESYNC, 60 s after its last sync)."""
    prefix = scratch_accounts
    a, b, _ = ops_and_dev(make_host, prefix, pg_uri, ["ops", "dev"])
    copy = Path(b.config["state_dir"]) / "break-glass.db"
    assert eventually(lambda: copy.exists() and sorted(_copied(copy)) == [f"{prefix}dev",
                                                                          f"{prefix}ops"])
    done = a.cli("fleet", "break-glass", "--admin-database", pg_uri, f"{prefix}ops")
    assert done.returncode == 0, done.stderr
    assert eventually(lambda: _copied(copy) == [f"{prefix}ops"], timeout=8), _copied(copy)
    assert "within seconds" in done.stdout
