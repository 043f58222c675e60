"""The rollout of README.Debian (sections 4, 5 and 5b) on two sshd containers, one
PostgreSQL over TLS and one slapd over LDAPS (issue 21's closing walk, made lean).

Host A is the admin host: the schema owner's passfile, `jctotp fleet init
--admin-database`, `jctotp fleet host add a|b --out DIR`; each host then gets its
own pgpass and `database:`/`host_name:` lines, the fleet's key, the CAs and the
LDAP block. Then, as README.Debian says they happen:
- a directory user's account is on host B, with the directory's UID, before any
  login, and their first SSH login there works (enrollment, then a shell);
- `jctotp policy set max_attempts 3` on A: B runs it without a restart and locks
  at 3; a file on B that says 6 is drift in B's doctor;
- slapd stopped: a break_glass_group member with a verifier on A logs in there
  with password + code, another user is refused, and the member is refused on B,
  where they never logged in with a password (no verifier);
- `jctotp fleet host remove b` on A: B's next login fails closed, A's works.
"""

from __future__ import annotations

import os
import re

import pexpect
import pytest
import yaml
from servers.postgres import pg, pg_cluster, pg_uri  # noqa: F401
from servers.slapd import slapd, slapd_server  # noqa: F401
from sshlib import KEY_RE, TEST_CONFIG, Result, Totp, finish
from testlib import eventually, ldap_directory

TAG = os.getpid() % 10000
CA = "/etc/jctotp/db-ca.pem"
# the hosts' own files say nothing about max_attempts: the fleet's policy decides
HOST_CONFIG = {k: v for k, v in TEST_CONFIG.items() if k != "max_attempts"}


def attempt(host, user: str, password: str, code: str) -> Result:
    """An SSH login that may end before any prompt (an outage fails closed at once)."""
    child = host.ssh(user, "echo ran-as-$(id -un)-uid-$(id -u)")
    if child.expect_exact(["Directory password: ", pexpect.EOF]) == 1:
        child.close()
        return Result(child.before or "", child.exitstatus or 255)
    child.sendline(password)
    if child.expect_exact(["Verification code: ", pexpect.EOF]) == 0:
        child.sendline(code)
    return finish(child)


def enroll(host, user: str, password: str) -> Totp:
    """The first SSH login of a member of mfa_groups: the QR code, then a shell."""
    child = host.ssh(user, "echo ran-as-$(id -un)-uid-$(id -u)")
    child.expect_exact("Directory password: ")
    child.sendline(password)
    child.expect_exact("(Enter to skip): ")
    totp = Totp(KEY_RE.search(child.before).group(1).replace(" ", ""))
    child.sendline(totp.fresh())
    child.expect_exact("Press Enter when you have stored them: ")
    child.sendline("")
    r = finish(child)
    assert r.ok and f"ran-as-{user}" in r.output, r.output + host.logs()[-3000:]
    return totp


@pytest.fixture
def fleet(fresh_sshd, pg, pg_uri, slapd):  # noqa: F811
    """README.Debian 4 and 5 on hosts A and B; the directory's users and groups."""
    group, carl, dora = f"walk{TAG}", f"carl{TAG}", f"dora{TAG}"
    users = {carl: 41000 + TAG, dora: 42000 + TAG}
    for name, uid in users.items():
        slapd.add_user(name, uid=uid)
    slapd.add_group(group, list(users))
    db = pg_uri.split("?")[0].rsplit("/", 1)[1]
    admin = pg.uri_for(db, passfile=False, tls=True).replace(str(pg.ca_file), CA)
    a, b = fresh_sshd("password"), fresh_sshd("password")
    for s in (a, b):
        s.ok(f"cat > {CA}", stdin=pg.ca_file.read_text())
        s.ok("cat > /etc/jctotp/ldap-ca.pem", stdin=slapd.ca_file.read_text())
        s.ok("umask 077 && cat > /etc/jctotp/ldap.pw", stdin=slapd.bind_password + "\n")
    # A, the admin host: the owner's password in root's passfile, init, a role per host
    a.ok("umask 077 && cat > /root/.pgpass", stdin=pg.passfile.read_text())
    a.ok("cat >> /etc/jctotp/config.yaml", stdin=f"database: {admin}&passfile=/root/.pgpass\n")
    a.ok(f"jctotp fleet init --admin-database '{admin}'")
    for h in ("a", "b"):
        a.ok(f"jctotp fleet host add {h} --admin-database '{admin}' --out /root/{h}")
    made = {h: (a.ok(f"cat /root/{h}/config.yaml"), a.ok(f"cat /root/{h}/pgpass"))
            for h in ("a", "b")}
    key = a.ok("base64 /var/lib/jctotp/secret.key")
    ldap = {"directory": ldap_directory(slapd, ca_file="/etc/jctotp/ldap-ca.pem",
                                        bind_password_file="/etc/jctotp/ldap.pw"),
            "mfa_groups": [group], "break_glass_group": "ops", "unknown_users": "ignore",
            "directory_sync_interval": 2}
    for h, s in (("a", a), ("b", b)):
        lines, pgpass = made[h]
        s.ok("umask 077 && cat > /etc/jctotp/pgpass", stdin=pgpass)
        s.ok("umask 077 && base64 -d > /var/lib/jctotp/secret.key", stdin=key)
        s.ok("cat > /etc/jctotp/config.yaml", stdin=yaml.safe_dump(dict(HOST_CONFIG, **ldap))
             + lines + "\n")
        s.ok("groupadd --system ops && jctotpd --check --strict && jctotpd-service restart")
        doctor = s.sh("jctotp doctor")[1]
        assert "ok    key check: this host's key file is the fleet's key" in doctor, doctor
        assert f"_{h}@" in s.ok("grep ^database: /etc/jctotp/config.yaml")
    a.ok("rm -r /root/a /root/b")
    return {"a": a, "b": b, "carl": carl, "dora": dora, "uids": users, "admin": admin}


def test_readme_debian_rollout(fleet, slapd):  # noqa: F811
    a, b, carl, dora = fleet["a"], fleet["b"], fleet["carl"], fleet["dora"]
    uid = fleet["uids"][carl]
    # accounts before the first login, the directory's UID on both hosts
    for s in (a, b):
        line = eventually(lambda s=s: s.sh(f"getent passwd {carl}")[1].strip() or None,
                          timeout=30)
        assert line.split(":")[2:4] == [str(uid)] * 2, line
    totp = enroll(b, carl, slapd.passwords[carl])        # the first login, first try
    enrolled_step = totp.last_step
    # dora: a break-glass member, with a password login on A only (A's verifier)
    assert eventually(lambda: a.sh(f"id {dora}")[0] == 0 or None, timeout=30)
    for s in (a, b):   # the daemon reads groups through NSS with a 10 s cache: restart
        s.ok(f"usermod -aG ops {dora}")
    a.ok("jctotpd-service restart")
    dora_totp = enroll(a, dora, slapd.passwords[dora])

    # 5b: one policy; B takes it without a restart and locks at 3
    said = a.ok("jctotp policy set max_attempts 3")
    assert "max_attempts: unset -> 3" in said, said
    assert eventually(lambda: re.search(r"^max_attempts\s+3\s+fleet\s",
                                        b.ok("jctotp policy show"), re.M), timeout=15)
    for _ in range(3):
        assert not attempt(b, carl, slapd.passwords[carl], totp.wrong()).ok
    locked = attempt(b, carl, slapd.passwords[carl], totp.fresh())
    assert not locked.ok and "locked" in locked.output, locked.output
    a.ok(f"jctotp unlock {carl}")
    # drift: B's file says 6, the fleet 3
    b.ok("echo 'max_attempts: 6' >> /etc/jctotp/config.yaml && "
         "kill -HUP $(cat /run/jctotp/jctotpd.pid)")
    drift = "policy key max_attempts: this host's file says 6, the fleet database 3"
    assert eventually(lambda: drift in b.sh("jctotp doctor")[1] or None, timeout=10)
    audit = a.ok("jctotp audit --since 10m")
    assert re.search(r"\spolicy_set\s.*key=max_attempts new=3", audit), audit

    # the directory down: dora (A's verifier) in on A; carl refused; dora refused on B
    slapd.stop()
    try:
        r = attempt(a, dora, slapd.passwords[dora], dora_totp.fresh())
        assert r.ok and f"ran-as-{dora}" in r.output, r.output + a.logs()[-3000:]
        # refused before any prompt, whatever the code (a wrong one keeps the steps)
        assert not attempt(a, carl, slapd.passwords[carl], totp.wrong()).ok
        assert not attempt(b, dora, slapd.passwords[dora], dora_totp.wrong()).ok
    finally:
        slapd.start()
    assert "break-glass: the password of " + dora in a.logs()

    # retiring B: its next login fails closed, A's works
    gone = a.ok(f"jctotp fleet host remove b --admin-database '{fleet['admin']}'")
    assert "apt-get purge pam-jctotp" in gone, gone
    assert not attempt(b, carl, slapd.passwords[carl], totp.wrong()).ok
    # the locked attempt's code was never checked: the step after enrollment is unused
    unused = Totp(totp.secret, last_step=enrolled_step)
    r = eventually(lambda: (lambda r: r if r.ok else None)(
        attempt(a, carl, slapd.passwords[carl], unused.fresh())), timeout=40)
    assert r, a.logs()[-3000:]
    assert f"ran-as-{carl}-uid-{uid}" in r.output
    listed = a.ok(f"jctotp fleet host list --admin-database '{fleet['admin']}'")
    assert re.search(r"^b\s+removed\s", listed, re.M), listed
