"""Two sshd containers ("hosts") on one PostgreSQL (issue 13): enroll over ssh on one,
log in over ssh on the other with the next code.

Both containers run with host networking, so their jctotpd reach the test
PostgreSQL on 127.0.0.1; each gets the libpq passfile copied in. Host A runs
`jctotp fleet init`; host B gets A's key file, as an admin would scp it. The
user is added on A only: B's daemon makes her Linux account by itself
(`create_system_accounts`), so B's sshd runs PAM for her.
"""

from __future__ import annotations

import time

import pytest
import yaml
from servers.postgres import pg, pg_cluster, pg_uri  # noqa: F401
from sshlib import KEY_RE, TEST_CONFIG, Totp, finish

ENROLL_PROMPT = "(Enter to skip): "
PASSFILE = "/etc/jctotp/pgpass"


@pytest.fixture
def fleet_hosts(fresh_sshd, pg, pg_uri):  # noqa: F811
    uri = pg_uri.replace(str(pg.passfile), PASSFILE)
    hosts = []
    for name in ("a", "b"):
        s = fresh_sshd("password")
        s.ok(f"umask 077 && cat > {PASSFILE}", stdin=pg.passfile.read_text())
        s.ok("cat > /etc/jctotp/config.yaml", stdin=yaml.safe_dump(
            dict(TEST_CONFIG, database=uri, host_name=f"host-{name}")))
        if name == "a":
            s.ok("jctotp fleet init")
            key = s.ok("base64 /var/lib/jctotp/secret.key")
        else:
            s.ok("umask 077 && base64 -d > /var/lib/jctotp/secret.key", stdin=key)
        s.ok("jctotpd-service restart")
        hosts.append(s)
    return hosts


def test_enroll_over_ssh_on_one_host_log_in_on_the_other(fleet_hosts):
    a, b = fleet_hosts
    a.add_user("fay", "fay-pass-1", enrolled=False)
    a.ok("jctotp mfa enable fay --enrollment-days 7")
    deadline = time.monotonic() + 15      # B's daemon makes the Linux account
    while b.sh("id fay")[0] != 0:
        assert time.monotonic() < deadline, b.logs()
        time.sleep(0.2)

    child = a.ssh("fay", "echo ran-on-a")
    child.expect_exact("assword: ")   # "Directory password: "
    child.sendline("fay-pass-1")
    child.expect_exact(ENROLL_PROMPT)
    assert "otpauth://totp/" in child.before
    totp = Totp(KEY_RE.search(child.before).group(1).replace(" ", ""))
    enrolled_with = totp.fresh()
    child.sendline(enrolled_with)
    child.expect_exact("Press Enter when you have stored them: ")
    child.sendline("")
    r = finish(child)
    assert r.ok and "ran-on-a" in r.output, a.logs()

    assert not b.login("fay", "fay-pass-1", enrolled_with).ok   # used on A: dead on B
    r = b.login("fay", "fay-pass-1", totp.fresh(), command="echo ran-on-$(hostname)-b")
    assert r.ok and "ran-on-" in r.output, b.logs()
    assert yaml.safe_load(b.ok("jctotp user show fay --json"))["mfa"] == "active"
