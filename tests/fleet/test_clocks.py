"""Hosts whose clocks disagree (issue 20 item 7).

A fleet's locks and failure windows run on the database's clock, never on a
host's: a host whose clock is ahead by `unlock_after` would otherwise find
every lock in the fleet run out and lift it in the shared database. TOTP
codes are still checked against the host's own clock (the phones' time), so
`jctotp doctor` says when a host's clock is more than a few seconds from the
database's.

The daemon's test clock (pam_jctotp/clock.py) has two knobs: `skew` makes one
host's clock wrong, `offset` moves time itself.
"""

from __future__ import annotations

import json

import pamdriver as pd
import pyotp
import pytest
from fleetlib import service
from testlib import code_at, host_clock

pytestmark = pytest.mark.fleet

PASSWORD = "correct horse battery"
AHEAD = 1000   # seconds B's clock is ahead: more than unlock_after


def wrong(totp: pyotp.TOTP) -> str:
    valid = {code_at(totp, d) for d in (-30, 0, 30)}
    return next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in valid)


def test_a_host_with_a_fast_clock_does_not_unlock_a_lock_made_elsewhere(make_host, confdir):
    a = make_host("a", max_attempts=2, unlock_after=900)
    b = make_host("b", max_attempts=2, unlock_after=900)
    totp = a.add_user("alice")
    for _ in range(2):
        pd.run(confdir, service(confdir, a), "alice", [PASSWORD, wrong(totp)])
    assert a.user("alice")["locked"]
    b.set_clock(0, skew=AHEAD)                       # B's NTP is broken: +1000 s
    assert b.user("alice")["locked"]                 # a read on B: still locked
    # the right password and the code B's clock expects: the lock holds
    r = pd.run(confdir, service(confdir, b), "alice", [PASSWORD, code_at(totp, AHEAD)])
    assert r.rc == pd.PAM_MAXTRIES, r
    assert a.user("alice")["locked"]                 # and nothing lifted it in the database
    assert "unlocked" not in [e["event"] for e in b.audit_events()]
    # doctor on B names the difference
    found = json.loads(b.cli("doctor", "--json").stdout)
    said = [f for f in found if "database's clock" in f["what"]]
    assert said and said[0]["level"] != "ok" and "ahead" in said[0]["what"], found
    # time itself passing still lifts the lock (on B too)
    b.set_clock(910, skew=AHEAD)
    assert not b.user("alice")["locked"]
    r = pd.run(confdir, service(confdir, b), "alice", [PASSWORD, code_at(totp, 910 + AHEAD)])
    assert r.rc == pd.PAM_SUCCESS, r


def test_a_host_with_a_fast_clock_counts_in_the_fleet_s_failure_window(make_host, confdir):
    """A failure on A, then one on B (clock +1000 s, past fail_interval): B must not
    start the window over; the second failure of the window locks."""
    a = make_host("a", max_attempts=2, fail_interval=900)
    b = make_host("b", max_attempts=2, fail_interval=900)
    totp = a.add_user("alice")
    pd.run(confdir, service(confdir, a), "alice", [PASSWORD, wrong(totp)])
    b.set_clock(0, skew=AHEAD)
    r = pd.run(confdir, service(confdir, b), "alice", ["wrong password", wrong(totp)])
    assert r.rc == pd.PAM_AUTH_ERR, r
    shown = a.user("alice")
    assert shown["locked"] and shown["failed_attempts"] == 2, shown


def test_doctor_finds_a_host_clock_in_step_with_the_database(make_host):
    a = make_host("a")
    found = json.loads(a.cli("doctor", "--json").stdout)
    said = [f for f in found if "database's clock" in f["what"]]
    assert [f["level"] for f in said] == ["ok"], found


def test_on_a_database_clock_fleet_the_database_s_clock_checks_codes(make_host, confdir,
                                                                     pg_uri):
    """A fleet's default (pg_codecheck.py, clock 'database'): a host whose NTP is broken
    still accepts the phones' codes and refuses the ones its own clock expects, and
    doctor says which clock is the authority."""
    a = make_host("a")
    b = make_host("b")
    host_clock(pg_uri, "database")
    totp = a.add_user("alice")
    b.set_clock(0, skew=AHEAD)
    r = pd.run(confdir, service(confdir, b), "alice", [PASSWORD, code_at(totp, AHEAD)])
    assert r.rc == pd.PAM_AUTH_ERR, r
    r = pd.run(confdir, service(confdir, b), "alice", [PASSWORD, code_at(totp)])
    assert r.rc == pd.PAM_SUCCESS, r
    found = json.loads(b.cli("doctor", "--json").stdout)
    said = [f for f in found if "database's clock" in f["what"]]
    assert said and said[0]["level"] != "ok" and "ahead" in said[0]["what"], found
    assert "the authority" in said[0]["what"], said
    found = json.loads(a.cli("doctor", "--json").stdout)
    said = [f for f in found if "database's clock" in f["what"]]
    assert [f["level"] for f in said] == ["ok"] and "the authority" in said[0]["what"], said
