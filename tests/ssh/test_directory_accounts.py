"""Issue 21 through the real sshd: the directory drives the host.

Containers (host networking) whose jctotpd reads the private slapd on 127.0.0.1,
with `login_groups` and `directory_sync_interval: 1`:
- a directory user the host never saw logs in at the first try, with the
  directory's UID, GID, home and shell (the account was made before sshd looked
  the name up); two hosts give the same UID; a UID clash with a local account is
  refused, the account not made, with one log line however many syncs run;
- the shipped drop-in (sshd_config.d/jctotp.conf): root logs in with a key alone,
  a directory user's key is not enough (keyboard-interactive still asks);
- sshd's fake password for a name without an account (`\\b\\n\\r\\177INCORRECT`)
  and a TAB password: wrong passwords, no "unavailable" line, the same fail_delay.
  Timing: pexpect, monotonic clock from sending the password line to the end of
  the ssh client (a code prompt, if any, answered at once), fail_delay 1 s, two
  logins of each kind; each at least fail_delay, the medians within TOLERANCE.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time

import pexpect
import pytest
import yaml
from servers.slapd import slapd, slapd_server  # noqa: F401
from sshlib import TEST_CONFIG, finish
from testlib import eventually, ldap_directory

SSHD_FAKE_USER = "nosuchuser"
FAIL_DELAY = 1.0
TOLERANCE = 0.35   # seconds between the medians (the ssh client's own work differs a little)
TAG = os.getpid() % 10000


def ldap_host(fresh_sshd, slapd, **config):  # noqa: F811
    """A container whose jctotpd has the slapd as its directory."""
    s = fresh_sshd("password")
    s.ok("mkdir -p /etc/jctotp && cat > /etc/jctotp/ldap-ca.pem",
         stdin=slapd.ca_file.read_text())
    s.ok("umask 077 && cat > /etc/jctotp/ldap.pw", stdin=slapd.bind_password + "\n")
    cfg = dict(TEST_CONFIG, directory_sync_interval=1, unknown_users="ignore",
               fail_delay=FAIL_DELAY, max_attempts=10,
               directory=ldap_directory(slapd, ca_file="/etc/jctotp/ldap-ca.pem",
                                        bind_password_file="/etc/jctotp/ldap.pw"), **config)
    s.ok("cat > /etc/jctotp/config.yaml", stdin=yaml.safe_dump(cfg))
    s.ok("jctotpd-service restart")
    return s


@pytest.fixture(scope="module")
def directory(slapd_server):  # noqa: F811
    """A login group of this module with one user (the slapd is shared by the session)."""
    group, erin = f"staff{TAG}", f"erin{TAG}"
    uid = 31000 + TAG
    slapd_server.add_user(erin, uid=uid, shell="/bin/sh")
    slapd_server.add_group(group, [erin])
    return {"group": group, "user": erin, "uid": uid}


def passwd_line(s, name: str) -> str | None:
    rc, out = s.sh(f"getent passwd {name}")
    return out.strip() if rc == 0 else None


def test_first_ssh_login_with_the_directorys_identity_on_two_hosts(fresh_sshd, slapd,  # noqa: F811
                                                                    directory):
    group, erin, uid = directory["group"], directory["user"], directory["uid"]
    hosts = [ldap_host(fresh_sshd, slapd, login_groups=[group]) for _ in range(2)]
    lines = [eventually(lambda h=h: passwd_line(h, erin), timeout=20) for h in hosts]
    assert lines[0] == lines[1] == f"{erin}:x:{uid}:{uid}:{erin}:/home/{erin}:/bin/sh" \
        or lines[0] and lines[0] == lines[1] and lines[0].split(":")[2:4] == [str(uid)] * 2, \
        (lines, hosts[0].logs())
    fields = lines[0].split(":")
    assert (fields[2], fields[3], fields[5], fields[6]) == (str(uid), str(uid),
                                                            f"/home/{erin}", "/bin/sh")
    # the first SSH login of a user this host never saw log in: at the first try
    r = hosts[0].login(erin, slapd.passwords[erin], None,
                       command="echo id=$(id -u):$(id -g) home=$HOME")
    assert r.ok and f"id={uid}:{uid} home=/home/{erin}" in r.output, hosts[0].logs()
    listed = {u["name"]: u for u in json.loads(hosts[1].ok("jctotp user list --json"))}
    assert erin in listed   # the record was made by the sync, before any login

    # a UID clash with a local account: refused, not renumbered, one log line
    clash_uid, frank = 32000 + TAG, f"frank{TAG}"
    hosts[1].ok(f"useradd --uid {clash_uid} localclash")
    slapd.add_user(frank, uid=clash_uid)
    slapd.add_to_group(group, frank)
    time.sleep(4)   # four syncs
    assert passwd_line(hosts[1], frank) is None
    assert passwd_line(hosts[0], frank).split(":")[2] == str(clash_uid)   # no clash there
    log = hosts[1].ok("cat /var/log/jctotp/jctotpd.log")
    said = [line for line in log.splitlines() if f"UID {clash_uid}" in line]
    assert len(said) == 1 and "localclash" in said[0], log


def test_the_shipped_dropin_root_key_alone_directory_user_not(fresh_sshd, slapd,  # noqa: F811
                                                              directory, tmp_path):
    group, erin = directory["group"], directory["user"]
    s = ldap_host(fresh_sshd, slapd, login_groups=[group])
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True)
    pub = (tmp_path / "id_ed25519.pub").read_text()
    assert eventually(lambda: passwd_line(s, erin), timeout=20), s.logs()
    for home, owner in (("/root", "root"), (f"/home/{erin}", erin)):
        s.ok(f"mkdir -p {home}/.ssh && cat > {home}/.ssh/authorized_keys && "
             f"chown -R {owner} {home}/.ssh && chmod 700 {home}/.ssh", stdin=pub)
    # root: the key alone, no prompt at all
    r = s.login("root", None, None, key=key)
    assert r.ok and "ran-as-root" in r.output, r.output + s.logs()
    # a directory user: the key is accepted, and keyboard-interactive still asks
    child = s.ssh(erin, "echo ran-as-$(id -un)", key=key)
    assert child.expect_exact(["Directory password: ", pexpect.EOF]) == 0, child.before
    child.sendline(slapd.passwords[erin])
    r = finish(child)
    assert r.ok and f"ran-as-{erin}" in r.output, r.output


def timed_failure(s, user: str, password: str) -> float:
    """Seconds from sending the password to the client's end (a code prompt answered)."""
    child = s.ssh(user, "true")
    child.expect_exact("Directory password: ")
    child.sendline(password)
    started = time.monotonic()
    while child.expect_exact(["Verification code: ", "Directory password: ",
                              pexpect.EOF], timeout=20) != 2:
        child.sendline("000000")
    elapsed = time.monotonic() - started
    child.close()
    assert child.exitstatus != 0
    return elapsed


def test_sshd_fake_password_and_a_tab_are_wrong_passwords(fresh_sshd, slapd,  # noqa: F811
                                                          directory):
    group, erin = directory["group"], directory["user"]
    s = ldap_host(fresh_sshd, slapd, login_groups=[group])
    assert eventually(lambda: passwd_line(s, erin), timeout=20), s.logs()
    known = [timed_failure(s, erin, "not erin's password") for _ in range(2)]
    # the name has no account: sshd replaces what is typed by \b\n\r\177INCORRECT
    unknown = [timed_failure(s, SSHD_FAKE_USER, "whatever is typed") for _ in range(2)]
    tab = [timed_failure(s, erin, "tab\tpassword") for _ in range(2)]
    print(f"\nfail_delay {FAIL_DELAY}: known wrong {known}, sshd fake {unknown}, tab {tab}")
    assert min(known + unknown + tab) >= FAIL_DELAY
    assert abs(statistics.median(unknown) - statistics.median(known)) < TOLERANCE
    assert abs(statistics.median(tab) - statistics.median(known)) < TOLERANCE
    shown = yaml.safe_load(s.ok(f"jctotp user show {erin} --json"))
    assert shown["failed_attempts"] == 4   # two wrong, two TAB: each counted
    events = [json.loads(line) for line in
              s.ok("cat /var/log/jctotp/audit.jsonl").splitlines()]
    assert any(e.get("event") == "login_fail" and e.get("user") == SSHD_FAKE_USER
               for e in events), events[-5:]
    log = s.ok("cat /var/log/jctotp/jctotpd.log")
    assert "unavailable" not in log, log


def nslcd(s, slapd) -> None:  # noqa: F811
    """Debian's nslcd + libnss-ldapd on the same directory (accounts: nss)."""
    conf = (f"uid nslcd\ngid nslcd\nuri {slapd.ldaps_uri}\nbase {slapd.base_dn}\n"
            f"binddn {slapd.bind_dn}\nbindpw {slapd.bind_password}\n"
            "tls_reqcert demand\ntls_cacertfile /etc/jctotp/ldap-ca.pem\n")
    s.ok("umask 077 && cat > /etc/nslcd.conf && chown root:nslcd /etc/nslcd.conf && "
         "chmod 640 /etc/nslcd.conf", stdin=conf)
    s.ok("sed -i -e 's/^passwd:.*/passwd: files ldap/' -e 's/^group:.*/group: files ldap/' "
         "/etc/nsswitch.conf && mkdir -p /run/nslcd && chown nslcd:nslcd /run/nslcd && nslcd")


def test_accounts_nss_first_login_through_nslcd_and_no_account_made(fresh_sshd, slapd,  # noqa: F811
                                                                     directory):
    group, erin, uid = directory["group"], directory["user"], directory["uid"]
    s = ldap_host(fresh_sshd, slapd, login_groups=[group], accounts="nss")
    nslcd(s, slapd)
    line = eventually(lambda: passwd_line(s, erin), timeout=20)
    assert line and line.split(":")[2:4] == [str(uid)] * 2, (line, s.logs())
    # the first SSH login works (nslcd gives sshd the account); the daemon made none
    r = s.login(erin, slapd.passwords[erin], None, command="echo id=$(id -u)")
    assert r.ok and f"id={uid}" in r.output, r.output + s.logs()
    assert s.sh(f"grep -c '^{erin}:' /etc/passwd")[1].strip() == "0"
    assert s.sh("test -e /var/lib/jctotp/system-accounts")[0] != 0
    assert "useradd" not in s.ok("cat /var/log/jctotp/jctotpd.log")
    listed = {u["name"] for u in json.loads(s.ok("jctotp user list --json"))}
    assert erin in listed   # the record is the sync's all the same
    # doctor looks members up through NSS: fine with nslcd, a failure without it
    assert "NSS sees the directory users" in s.sh("jctotp doctor")[1]
    s.ok("kill $(cat /run/nslcd/nslcd.pid)")
    rc, out = s.sh("jctotp doctor")
    assert rc != 0 and f"NSS does not know the directory user(s) {erin}" in out, out
