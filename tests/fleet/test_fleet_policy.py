"""One policy for the fleet (issue 21): `jctotp policy show|set` through two hosts.

`policy set max_attempts 3` on host A is stored in the fleet database and reaches
host B through the change notification (no restart, no reload): B then locks after
3 wrong codes, where its own file says 5. A host file that sets a policy key to
another value is drift (policy show, doctor); `local_overrides` keeps the file's
value on purpose. A SIGHUP is audited with the names of the keys it changed.
"""

from __future__ import annotations

import json
import signal
import time

import pamdriver as pd
import pytest
from fleetlib import service
from testlib import code_at

pytestmark = pytest.mark.fleet

PASSWORD = "correct horse battery"


def running(host, key):
    shown = host.ok("policy.show")
    return next(k for k in shown["keys"] if k["key"] == key)


def wait_for(check, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def wrong(totp) -> str:
    valid = {code_at(totp, d) for d in (-30, 0, 30)}
    return next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in valid)


# As the schema's owner, and as each host's own role (issue 22: the host sets policy
# through jctotp_policy_set, SECURITY DEFINER, and reads fleet_policy).
@pytest.mark.parametrize("host_roles", [False, True], ids=["shared-role", "host-roles"])
def test_policy_set_on_a_makes_b_lock_at_three_without_a_restart(make_host, confdir):
    a = make_host("a", max_attempts=5, unlock_after=0, fail_delay=0.05)
    b = make_host("b", unlock_after=0, fail_delay=0.05)   # max_attempts: the default 5
    totp = a.add_user("alice")
    pid = b.proc.pid
    done = a.cli("policy", "set", "max_attempts", "3")
    assert done.returncode == 0, done.stderr
    assert "max_attempts: unset -> 3" in done.stdout
    wait_for(lambda: running(b, "max_attempts")["running"] == 3, "B never took max_attempts 3")
    shown = running(b, "max_attempts")
    assert shown["source"] == "fleet" and shown["fleet"] == 3
    assert shown["set_by"] == "root@host-a"
    rcs = [pd.run(confdir, service(confdir, b), "alice", [PASSWORD, wrong(totp)]).rc
           for _ in range(3)]
    assert rcs == [pd.PAM_AUTH_ERR] * 3
    assert b.user("alice")["locked"]
    assert b.proc.pid == pid and b.proc.poll() is None     # no restart
    audited = [e for e in a.audit_events() if e["event"] == "policy_set"]
    assert [(e["actor"], e["key"], e["old"], e["new"]) for e in audited] == [
        ("root", "max_attempts", "unset", "3")]
    # the same value again: no change, nothing audited; a bad value names the key
    assert a.cli("policy", "set", "max_attempts", "3").returncode == 0
    bad = a.cli("policy", "set", "max_attempts", "0")
    assert bad.returncode != 0 and "max_attempts" in bad.stderr and "1..100" in bad.stderr
    assert a.cli("policy", "set", "max_atempts", "3").returncode != 0
    assert len([e for e in a.audit_events() if e["event"] == "policy_set"]) == 1


def test_a_file_that_says_otherwise_is_drift_unless_a_local_override(make_host):
    a = make_host("a")
    b = make_host("b", max_attempts=6)
    assert a.cli("policy", "set", "max_attempts", "3").returncode == 0
    wait_for(lambda: running(b, "max_attempts")["running"] == 3, "B never took the fleet's")
    shown = running(b, "max_attempts")
    assert shown["drift"] and shown["file"] == 6 and shown["fleet"] == 3
    assert not running(a, "max_attempts")["drift"]           # A's file does not set it
    table = b.cli("policy", "show")
    assert table.returncode == 0, table.stderr
    assert "policy key max_attempts: this host's file says 6" in table.stdout
    doctor = b.cli("doctor")
    assert "warn  policy key max_attempts: this host's file says 6, the fleet database 3" \
        in doctor.stdout, doctor.stdout
    # the host marks it as its own: the file wins there, no drift, the reload audited
    b.config["local_overrides"] = ["max_attempts"]
    b.write_config()
    b.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: running(b, "max_attempts")["running"] == 6, "reload did not apply")
    shown = running(b, "max_attempts")
    assert shown["source"] == "local override" and not shown["drift"]
    assert "policy key max_attempts" not in b.cli("doctor").stdout
    reloads = [e for e in b.audit_events() if e["event"] == "config_reloaded"]
    assert [e.get("changed") for e in reloads] == ["local_overrides"]


def test_keys_waiting_for_a_reload_or_a_restart_are_reported(make_host):
    b = make_host("b")
    b.config.update(fail_delay=1.0, pam_processes=2)
    b.write_config()
    shown = b.ok("policy.show")
    assert shown["reload_needed"] == ["fail_delay"]
    assert shown["restart_needed"] == ["pam_processes"]
    b.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: b.ok("policy.show")["reload_needed"] == [], "reload not taken")
    assert b.ok("policy.show")["restart_needed"] == ["pam_processes"]
    doctor = b.cli("doctor").stdout
    assert "wait for a restart (a reload keeps the running value): pam_processes" in doctor
    reload = [e for e in b.audit_events() if e["event"] == "config_reloaded"][-1]
    assert reload["changed"] == "fail_delay" and reload["restart_needed"] == "pam_processes"
    assert json.dumps(reload).count("1.0") == 0   # names, never values


def test_a_policy_reaches_the_pam_processes_too(make_host, confdir):
    b = make_host("b", pam_processes=2, unlock_after=0, fail_delay=0.05)
    totp = b.add_user("alice")
    assert b.cli("policy", "set", "max_attempts", "2").returncode == 0
    time.sleep(3 * 2.0)   # the PAM process polls the change counter (fleet_sync_interval)
    svc = service(confdir, b)
    for _ in range(2):
        pd.run(confdir, svc, "alice", [PASSWORD, wrong(totp)])
    assert b.user("alice")["locked"]
