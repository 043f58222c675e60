"""Two jctotpd "hosts" on one PostgreSQL, each driven through the real libpam (issue 13),
sharing one database role or each with its own (issue 22).

Host A and host B have their own sockets, state_dir and audit log; they share
only the database and the key file. Whatever one host decides, the other sees
in the same second: a used code, the attempt counter and the lock, users,
enrollment resets.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pamdriver as pd
import pyotp
import pytest
from fleetlib import service
from testlib import code_at

pytestmark = pytest.mark.fleet

PASSWORD = "correct horse battery"


@pytest.fixture(params=[False, True], ids=["shared-role", "host-roles"])
def host_roles(request) -> bool:
    """Every test twice: all hosts as the schema's owner, and each host as its own
    role (issue 22), which must change nothing a login or an admin sees."""
    return request.param


def wrong(totp: pyotp.TOTP) -> str:
    valid = {code_at(totp, d) for d in (-30, 0, 30)}
    return next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in valid)


def split(confdir, hosts, n, user, answers):
    """n logins at once, alternating between the hosts; the PAM results in order."""
    svcs = [service(confdir, h) for h in hosts]
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda i: pd.run(confdir, svcs[i % len(svcs)], user, answers),
                             range(n)))


def test_a_code_accepted_on_a_is_refused_on_b(make_host, confdir):
    a, b = make_host("a"), make_host("b")
    totp = a.add_user("alice")
    code = code_at(totp)
    assert pd.run(confdir, service(confdir, a), "alice", [PASSWORD, code]).rc == pd.PAM_SUCCESS
    assert pd.run(confdir, service(confdir, b), "alice", [PASSWORD, code]).rc == pd.PAM_AUTH_ERR
    assert [e["event"] for e in b.audit_events()].count("replay_refused") == 1


def test_fifty_logins_with_one_code_split_over_two_hosts_accept_exactly_one(make_host, confdir):
    # max_attempts 100: all 50 are evaluated (none is turned away by the lock)
    a = make_host("a", max_attempts=100, fail_delay=0.05)
    b = make_host("b", max_attempts=100, fail_delay=0.05)
    totp = a.add_user("alice")
    results = split(confdir, (a, b), 50, "alice", [PASSWORD, code_at(totp)])
    assert [r.rc for r in results].count(pd.PAM_SUCCESS) == 1, {r.name for r in results}
    assert all(r.rc in (pd.PAM_SUCCESS, pd.PAM_AUTH_ERR) for r in results)
    replays = sum([e["event"] for e in h.audit_events()].count("replay_refused") for h in (a, b))
    assert replays == 49


def test_fifty_wrong_guesses_split_over_two_hosts_lock_after_five(make_host, confdir):
    a = make_host("a", max_attempts=5, unlock_after=0, fail_delay=0.2)
    b = make_host("b", max_attempts=5, unlock_after=0, fail_delay=0.2)
    totp = a.add_user("alice")
    results = split(confdir, (a, b), 50, "alice", [PASSWORD, wrong(totp)])
    # How we know at most 5 were evaluated: a guess whose code was checked ends in
    # AUTH_ERR with a login_fail "wrong_code" event on the host that checked it; a
    # guess turned away before any check ends in MAXTRIES with reason "locked".
    assert [r.rc for r in results].count(pd.PAM_AUTH_ERR) == 5
    assert [r.rc for r in results].count(pd.PAM_MAXTRIES) == 45
    checked = [e for h in (a, b) for e in h.audit_events()
               if e["event"] == "login_fail" and e.get("reason") == "wrong_code"]
    assert len(checked) == 5
    assert sum(e["event"] == "locked" for h in (a, b) for e in h.audit_events()) == 1
    for host in (a, b):
        shown = host.user("alice")
        assert shown["locked"] and shown["failed_attempts"] == 5
        assert pd.run(confdir, service(confdir, host), "alice",
                      [PASSWORD, code_at(totp)]).rc == pd.PAM_MAXTRIES


def test_admin_actions_on_one_host_take_effect_on_the_other(make_host, confdir):
    a = make_host("a", max_attempts=2, unlock_after=0)
    b = make_host("b", max_attempts=2, unlock_after=0)
    totp = a.add_user("alice")                       # added on A ...
    assert pd.run(confdir, service(confdir, b), "alice",
                  [PASSWORD, code_at(totp)]).rc == pd.PAM_SUCCESS   # ... logs in on B
    for _ in range(2):                               # locked on A
        pd.run(confdir, service(confdir, a), "alice", [PASSWORD, wrong(totp)])
    assert b.user("alice")["locked"]
    b.ok("unlock", names=["alice"])                  # unlocked on B ...
    assert not a.user("alice")["locked"]
    a.set_clock(30)
    assert pd.run(confdir, service(confdir, a), "alice",  # ... works on A
                  [PASSWORD, code_at(totp, 30)]).rc == pd.PAM_SUCCESS
    a.ok("mfa.reset", names=["alice"], enrollment_days=3)   # reset on A ...
    r = pd.run(confdir, service(confdir, b), "alice", lambda m, t: PASSWORD
               if m.text.endswith("assword: ") else "")
    infos = "\n".join(m.text for m in r.transcript if m.style == "info")
    assert "otpauth://totp/" in infos and ("\u2584" in infos or "\u2580" in infos)  # ... QR on B
    assert r.rc == pd.PAM_SUCCESS and "day(s) left" in infos


def test_a_host_with_another_key_refuses_to_start_naming_the_cause(make_host, tmp_path):
    make_host("a")
    b = make_host("b", start=False)
    Path(b.config["secret_key_file"]).write_bytes(bytes(range(32)))
    with pytest.raises(RuntimeError) as failed:
        b.start()
    assert "key check mismatch" in str(failed.value)
    assert "secret.key" in str(failed.value)


def test_a_host_without_the_key_file_says_to_copy_it(make_host):
    make_host("a")
    b = make_host("b", start=False)
    Path(b.config["secret_key_file"]).unlink()
    with pytest.raises(RuntimeError, match="copy the fleet's key file"):
        b.start()


def outage_lines(host) -> int:
    return host.log.read_text().count("unavailable:")


def test_database_down_fails_closed_once_logged_then_recovers(make_host, confdir, pg):
    a = make_host("a", max_attempts=100)
    b = make_host("b", max_attempts=100)
    totp = a.add_user("alice")
    svc = {id(h): service(confdir, h, timeout=10) for h in (a, b)}
    pg.stop()
    for offset in (0, 30, 60):
        for host in (a, b):
            host.set_clock(offset)
            r = pd.run(confdir, svc[id(host)], "alice", [PASSWORD, code_at(totp, offset)])
            assert r.rc == pd.PAM_AUTHINFO_UNAVAIL, r
            assert r.elapsed < 10
    assert outage_lines(a) == 1 and outage_lines(b) == 1   # one line per outage, not per login
    pg.start()
    for n, host in enumerate((a, b)):
        offset = 90 + 30 * n
        host.set_clock(offset)
        deadline = time.monotonic() + 20
        while True:
            r = pd.run(confdir, svc[id(host)], "alice", [PASSWORD, code_at(totp, offset)])
            if r.rc == pd.PAM_SUCCESS or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert r.rc == pd.PAM_SUCCESS, r                     # no restart needed
        assert "back after" in host.log.read_text()
    assert outage_lines(a) == 1 and outage_lines(b) == 1
