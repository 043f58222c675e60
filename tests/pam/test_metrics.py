"""Prometheus metrics through the real PAM stack (issue 24).

A scripted mix of logins (success, wrong code, replay, lockout, enrollment)
against a daemon with `metrics_textfile` (every second) and `metrics_listen` on
loopback; the textfile and the endpoint parse with prometheus_client's own
parser and every counter has the value the script implies, also with
`pam_processes: 2` (one set for the daemon: its PAM processes' counts summed).
"""

from __future__ import annotations

import ipaddress
import time
import urllib.request
from pathlib import Path

import pamdriver as pd
import pyotp
import pytest
from pamdriver import service
from prometheus_client.parser import text_string_to_metric_families
from servers import free_port
from test_enrollment import PASSWORD, Enroller
from testlib import code_at

from pam_jctotp import config as configmod

pytestmark = pytest.mark.pam

DAY = 86400
VERDICT = {pd.PAM_SUCCESS: "success", pd.PAM_AUTH_ERR: "auth_err", pd.PAM_MAXTRIES: "maxtries"}


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def listeners(port: int) -> list[str]:
    """The addresses listening on TCP `port` (/proc/net/tcp and tcp6, state 0A)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                raw = bytes.fromhex(address)
                # the kernel prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.append(str(ipaddress.ip_address(words)))
    return found


def wrong(totp: pyotp.TOTP, offset: float = 0) -> str:
    valid = {code_at(totp, offset + d) for d in (-30, 0, 30)}
    return next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in valid)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_scripted_mix_of_logins_gives_exact_counters(make_daemon, confdir, tmp_path,
                                                       processes):
    textfile = tmp_path / "jctotp.prom"
    port = free_port()
    d = make_daemon(metrics_textfile=str(textfile), metrics_interval=1,
                    metrics_listen=f"127.0.0.1:{port}", max_attempts=3, unlock_after=0,
                    pam_processes=processes)
    svc = service(confdir, d)
    alice, bob = d.add_user("alice"), d.add_user("bob")
    auth: dict[str, int] = {}

    def login(user, answers, call="auth"):
        r = pd.run(confdir, svc, user, answers, call=call)
        auth[VERDICT[r.rc]] = auth.get(VERDICT[r.rc], 0) + 1
        return r

    assert login("alice", [PASSWORD, code_at(alice)]).rc == pd.PAM_SUCCESS       # ok
    assert login("alice", [PASSWORD, code_at(alice)]).rc == pd.PAM_AUTH_ERR      # replay
    assert login("alice", [PASSWORD, wrong(alice)]).rc == pd.PAM_AUTH_ERR        # wrong
    for _ in range(3):                                                          # bob locks
        login("bob", [PASSWORD, wrong(bob)])
    assert d.user("bob")["locked"]
    assert login("bob", [PASSWORD, code_at(bob)]).rc == pd.PAM_MAXTRIES          # locked
    d.add_user("carol", mfa=False)
    d.ok("mfa.enable", names=["carol"], enrollment_days=7)
    r = pd.run(confdir, svc, "carol", Enroller(), call="both")                   # enrolls
    assert r.rc == pd.PAM_SUCCESS
    auth["success"] += 1      # (its account phase: vouched for by auth, not asked again)
    assert pd.run(confdir, svc, "bob", [], call="acct").rc == pd.PAM_PERM_DENIED  # locked
    for name, days in (("dave", 7), ("erin", 1)):       # never log in: pending, then expired
        d.add_user(name, mfa=False)
        d.ok("mfa.enable", names=[name], enrollment_days=days)
    d.set_clock(3 * DAY)

    want = {("jctotp_logins_total", "auth", s): n for s, n in auth.items()}
    want[("jctotp_logins_total", "acct", "perm_denied")] = 1
    want[("jctotp_code_checks_total", "ok")] = 1
    want[("jctotp_code_checks_total", "replay")] = 1
    want[("jctotp_code_checks_total", "wrong")] = 4
    want[("jctotp_lockouts_total",)] = 1
    want[("jctotp_enrollments_total", "enrolled")] = 1
    want[("jctotp_break_glass_logins_total",)] = 0
    want[("jctotp_locked_users",)] = 1
    want[("jctotp_enrollments_pending",)] = 1
    want[("jctotp_enrollments_expired",)] = 1
    want[("jctotp_database_up",)] = 1
    want[("jctotp_directory_up",)] = 1
    want[("jctotp_login_seconds_count", "auth")] = sum(auth.values())
    want[("jctotp_login_seconds_count", "acct")] = 1

    def got(found):
        out = {}
        for key in want:
            name, *rest = key
            labels = {}
            if name == "jctotp_logins_total":
                labels = {"phase": rest[0], "result": rest[1]}
            elif name in ("jctotp_code_checks_total", "jctotp_enrollments_total"):
                labels = {"result": rest[0]}
            elif name == "jctotp_login_seconds_count":
                labels = {"phase": rest[0]}
            out[key] = value(found, name, **labels)
        return out

    deadline = time.monotonic() + 10     # the textfile is rewritten every second
    while True:
        found = samples(textfile.read_text()) if textfile.exists() else {}
        if got(found) == want or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got(found) == want
    assert oct(textfile.stat().st_mode & 0o777) == "0o644"
    assert not list(textfile.parent.glob("*.tmp"))          # written atomically (renamed)
    assert value(found, "jctotp_database_seconds_count", call="get") > 0
    assert "alice" not in textfile.read_text()               # no user name, anywhere

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert got(samples(answer.read().decode())) == want
    assert listeners(port) == ["127.0.0.1"]                 # bound to loopback only
    shown = d.cli("status", "--metrics")
    assert shown.returncode == 0, shown.stderr
    assert got(samples(shown.stdout)) == want


@pytest.mark.parametrize("address", ["0.0.0.0:9877", "192.0.2.1:9877", "[::]:9877",
                                     "localhost:9877", "127.0.0.1"])
def test_metrics_listen_accepts_only_a_loopback_address(address):
    cfg, problems = configmod.parse_collect({"metrics_listen": address})
    assert problems.items and cfg.metrics_listen is None
    assert "metrics_listen" in str(problems.items)
    for good in ("127.0.0.1:9877", "[::1]:9877"):
        cfg, problems = configmod.parse_collect({"metrics_listen": good})
        assert not problems.items and cfg.metrics_listen == good


def test_metrics_are_off_by_default(daemon, tmp_path):
    assert not (Path(daemon.config["state_dir"]) / "metrics").exists()
    shown = daemon.cli("status", "--metrics")
    assert shown.returncode == 78 and "metrics are off" in shown.stderr
