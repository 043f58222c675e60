"""The primary dies, the standby is promoted, logins resume by themselves (issue 24).

A private primary and a synchronous streaming standby (tests/servers/standby.py);
every host's `database:` names both, primary first. jctotpd tries the hosts of
such a URI in order, read-write only, for every new connection (psycopg 3.1.7's
pool does not fail over by itself, psycopg #674). During a stream of logins the
primary is SIGKILLed and the standby promoted: logins fail closed meanwhile
(never with a wrong code accepted), resume without a restart, and a code
accepted just before the kill stays used (synchronous replication: the
watermark's commit waited for the standby).
"""

from __future__ import annotations

import contextlib
import threading
import time

import pamdriver as pd
import pytest
from fleetlib import service
from servers.standby import StandbyPair, new_pair
from test_two_hosts import PASSWORD, wrong
from testlib import code_at

pytestmark = pytest.mark.fleet

TIMEOUT = 5


@pytest.fixture
def pair():
    made = new_pair()
    yield made
    made.destroy()


@pytest.fixture
def pg_uri(pair: StandbyPair) -> str:   # make_host's database: both hosts, primary first
    return pair.uri


def test_primary_killed_standby_promoted_logins_resume_and_codes_stay_used(
        make_host, confdir, pair):
    a = make_host("a", max_attempts=100)     # the stream of logins
    b = make_host("b", max_attempts=100)     # one login just before the kill
    alice, bob = a.add_user("alice"), a.add_user("bob")
    svc_a, svc_b = service(confdir, a, timeout=TIMEOUT), service(confdir, b, timeout=TIMEOUT)
    # (began, ended, "right"/"wrong", rc): a login begun before the kill may commit
    # before it and return just after, so both ends are kept
    results: list[tuple[float, float, str, int]] = []
    stop = threading.Event()

    def stream() -> None:
        offset = 0
        while not stop.is_set():
            offset += 30   # a fresh time-step each round: a right code is never a replay
            # the control socket answers even during the outage
            with contextlib.suppress(Exception):
                a.set_clock(offset)
            for kind, code in (("right", code_at(alice, offset)), ("wrong", wrong(alice))):
                began = time.monotonic()
                r = pd.run(confdir, svc_a, "alice", [PASSWORD, code])
                results.append((began, time.monotonic(), kind, r.rc))
            time.sleep(0.05)

    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        deadline = time.monotonic() + 30
        while sum(k == "right" and rc == pd.PAM_SUCCESS for _, _, k, rc in results) < 3:
            assert time.monotonic() < deadline, results
            time.sleep(0.1)
        b.set_clock(600)
        code = code_at(bob, 600)
        assert pd.run(confdir, svc_b, "bob", [PASSWORD, code]).rc == pd.PAM_SUCCESS
        assert pair.sync_state() == "sync"
        killed = time.monotonic()
        pair.kill_primary()
        time.sleep(1)              # the fleet notices: logins fail closed meanwhile
        promoting = time.monotonic()
        pair.promote()
        deadline = time.monotonic() + 30
        while not any(began > killed and k == "right" and rc == pd.PAM_SUCCESS
                      for began, _, k, rc in results):
            assert time.monotonic() < deadline, (a.log.read_text(), results[-6:])
            time.sleep(0.05)
        # the first login after the kill that got in (none could before the promotion)
        resumed = min(ended for began, ended, k, rc in results
                      if began > killed and k == "right" and rc == pd.PAM_SUCCESS)
        time.sleep(1)
    finally:
        stop.set()
        streamer.join(30)
    print(f"\nfailover: promotion started {promoting - killed:.1f} s after the kill; the "
          f"first login got in {resumed - promoting:.2f} s after that")
    assert resumed > promoting
    # no wrong code ever got in; right codes either got in or failed closed
    assert all(rc != pd.PAM_SUCCESS for _, _, k, rc in results if k == "wrong"), results
    assert {rc for _, _, k, rc in results if k == "right"} <= {pd.PAM_SUCCESS,
                                                            pd.PAM_AUTHINFO_UNAVAIL}
    assert any(rc == pd.PAM_AUTHINFO_UNAVAIL for _, _, _, rc in results)   # it did go down
    assert resumed - promoting < 10
    # the code bob used just before the kill is used on the promoted standby too
    assert pd.run(confdir, svc_b, "bob", [PASSWORD, code]).rc == pd.PAM_AUTH_ERR
    assert [e["event"] for e in b.audit_events()].count("replay_refused") == 1
    log = a.log.read_text()   # one line down, one back, no restart
    assert log.count("unavailable:") == 1 and log.count("back after") == 1, log
    log = b.log.read_text()   # idle through it all: its next call just reconnected
    assert log.count("unavailable:") == log.count("back after") <= 1, log

