"""Issue 21 item 7: a password the LDAP library refuses is a wrong password, never an outage.

sshd sends `\\b\\n\\r\\177INCORRECT` as the password of a name without an account;
ldap3's SASLprep refuses it (control characters), as it refuses a TAB. Through the
real libpam against the private slapd: counted as a wrong password, no "directory
unavailable" line, and answered after the same fail_delay as a known user's wrong
password.

How the timing is measured: `pamdriver.run`'s `elapsed` (monotonic clock around
pam_authenticate, password and code answered at once), fail_delay 0.5 s, the
median of 3 logins per kind compared with the known user's wrong password: within
TOLERANCE, and none sooner than fail_delay.
"""

from __future__ import annotations

import statistics

import pamdriver as pd
import pytest
from pamdriver import service
from testlib import code_at

pytestmark = pytest.mark.ldap

SSHD_FAKE = "\b\n\r\177INCORRECT"   # sshd's auth2-passwd/auth-pam for an invalid user
TAB = "tab\tpassword"
FAIL_DELAY = 0.5
TOLERANCE = 0.1


def enrolled(daemon, name: str):
    import pyotp
    data = daemon.ok("user.add", name=name, mfa=True, system_account=False)
    return pyotp.parse_uri(data["otpauth_uri"])


def outage_lines(daemon) -> list[str]:
    return [line for line in daemon.log.read_text().splitlines() if "unavailable" in line]


@pytest.mark.parametrize("password", [SSHD_FAKE, TAB], ids=["sshd-INCORRECT", "tab"])
def test_an_odd_password_is_a_counted_wrong_password(ldap_daemon, slapd, confdir, password):
    daemon = ldap_daemon()
    totp = enrolled(daemon, "bob")
    svc = service(confdir, daemon)
    r = pd.run(confdir, svc, "bob", [password, code_at(totp)])
    assert r.rc == pd.PAM_AUTH_ERR, r
    assert daemon.user("bob")["failed_attempts"] == 1
    assert outage_lines(daemon) == [], daemon.log.read_text()
    # an unknown name with sshd's fake password: refused as unknown, still no outage
    r = pd.run(confdir, svc, "nosuchuser", [password, "123456"])
    assert r.rc == pd.PAM_AUTH_ERR, r
    assert outage_lines(daemon) == [], daemon.log.read_text()
    # the directory still answers, and the right code was not burnt
    assert pd.run(confdir, svc, "bob", [slapd.passwords["bob"], code_at(totp)]
                  ).rc == pd.PAM_SUCCESS
    assert "reachable again" not in daemon.log.read_text()


def test_odd_passwords_do_not_clear_the_connection_pool(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon(mfa_groups=[])
    svc = service(confdir, daemon)
    assert pd.run(confdir, svc, "bob", [slapd.passwords["bob"]]).rc == pd.PAM_SUCCESS
    mark = slapd.log_mark()
    pd.run(confdir, svc, "bob", [SSHD_FAKE])
    text = slapd.log.read_bytes()[mark:].decode(errors="replace")
    # a cleared pool would unbind its connections and open fresh ones (new TLS sessions)
    assert " UNBIND" not in text, text


@pytest.mark.serial  # compares medians to 0.1 s: alone, not beside other tests
def test_odd_passwords_take_the_same_time_as_a_wrong_one(ldap_daemon, slapd, confdir):
    daemon = ldap_daemon(fail_delay=FAIL_DELAY, max_attempts=100)
    totp = enrolled(daemon, "bob")
    svc = service(confdir, daemon)
    kinds = {"wrong": ("bob", "not the password"), "incorrect": ("bob", SSHD_FAKE),
             "tab": ("bob", TAB), "unknown-incorrect": ("nosuchuser", SSHD_FAKE)}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(3):
        for kind, (name, password) in kinds.items():
            r = pd.run(confdir, svc, name, [password, code_at(totp)])
            assert r.rc == pd.PAM_AUTH_ERR, (kind, r)
            times[kind].append(r.elapsed)
    print({k: [round(t, 3) for t in ts] for k, ts in times.items()})   # shown with -s
    assert min(t for ts in times.values() for t in ts) >= FAIL_DELAY, times
    reference = statistics.median(times["wrong"])
    for kind, ts in times.items():
        assert abs(statistics.median(ts) - reference) < TOLERANCE, (kind, times)
    assert daemon.user("bob")["failed_attempts"] == 9
    assert outage_lines(daemon) == []
