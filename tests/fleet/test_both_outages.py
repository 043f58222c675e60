"""The fleet database AND the directory down at once (issue 21), through the real libpam.

A fleet host whose directory is slapd, with a break-glass group: while both answer,
its member's login leaves this host a copy of their secret (fleet/breakglass.py)
and a verifier of their directory password (directory/offline.py). With PostgreSQL
and slapd both stopped, that member still logs in with password AND code; a
directory user outside the group fails closed, as before.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pamdriver as pd
import pyotp
import pytest
from fleetlib import service
from servers.slapd import slapd, slapd_server  # noqa: F401
from testlib import code_at, ldap_directory

pytestmark = [pytest.mark.fleet, pytest.mark.ldap]


def copied(copy: Path) -> list[str]:
    with sqlite3.connect(copy) as db:
        return [r[0] for r in db.execute("SELECT name FROM users ORDER BY name")]


def test_database_and_directory_down_a_break_glass_member_still_logs_in(
        make_host, slapd, pg, confdir, scratch_accounts):  # noqa: F811
    group, ops = f"{scratch_accounts}bg", f"{scratch_accounts}ops"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-M", "-G", group, ops], check=True)
    slapd.add_user(ops)
    a = make_host("a", directory=ldap_directory(slapd), break_glass_group=group,
                  create_system_accounts=False, fail_delay=0.05)
    totp = {name: pyotp.parse_uri(a.ok("user.add", name=name, mfa=True,
                                        system_account=False)["otpauth_uri"])
            for name in (ops, "alice")}
    svc = service(confdir, a, timeout=5)

    def login(name, at):
        return pd.run(confdir, svc, name, [slapd.passwords[name], code_at(totp[name], at)],
                      call="both")

    assert login(ops, 0).rc == pd.PAM_SUCCESS       # leaves the verifier
    copy = Path(a.config["state_dir"]) / "break-glass.db"
    deadline = time.monotonic() + 10
    while not (copy.exists() and copied(copy) == [ops]):
        assert time.monotonic() < deadline, "no break-glass copy"
        time.sleep(0.1)
    pg.stop()
    slapd.stop()
    try:
        a.set_clock(30)
        r = login(ops, 30)
        assert r.rc == pd.PAM_SUCCESS, a.log.read_text()
        assert login("alice", 30).rc == pd.PAM_AUTHINFO_UNAVAIL
    finally:
        slapd.start()
        pg.start()
