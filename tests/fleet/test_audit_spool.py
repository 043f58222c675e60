"""Audit during a fleet database outage (issue 22): the events the database cannot
take are spooled on the host (root-only, fsync'd, through a kill -9), `jctotp audit`
reads the host's own file meanwhile and says so, and once the database returns the
spooled events reach the fleet's audit: marked, in order, with their original
times, and the hash chain still verifies."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pamdriver as pd
import pytest
from fleetlib import eventually, service
from testlib import code_at

from pam_jctotp.fleet.spool import OVERFLOW, Spool

pytestmark = pytest.mark.fleet

PASSWORD = "correct horse battery"


def fleet_events(host) -> list[dict]:
    done = host.cli("audit", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_outage_events_are_spooled_and_shipped_in_order(make_host, confdir, pg, pg_uri,
                                                        scratch_accounts):
    prefix = scratch_accounts
    group, ops, dev = f"{prefix}bg", f"{prefix}ops", f"{prefix}dev"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-G", group, ops], check=True)
    subprocess.run(["useradd", dev], check=True)
    a = make_host("a", role=True)
    b = make_host("b", role=True, break_glass_group=group, start=False)
    ops_totp, dev_totp = a.add_user(ops), a.add_user(dev)
    # host roles read no key but those the owner lists for break-glass (issue 22)
    listed = a.cli("fleet", "break-glass", "--admin-database", pg_uri, ops)
    assert listed.returncode == 0, listed.stderr
    b.start()
    copy = Path(b.config["state_dir"]) / "break-glass.db"
    spool = Path(b.config["state_dir"]) / "audit-spool"
    assert eventually(lambda: copy.exists() and _keyed(copy) == [ops])
    svc = service(confdir, b, timeout=5)
    before = len(b.audit_events())

    pg.stop()
    assert pd.run(confdir, svc, dev, [PASSWORD, code_at(dev_totp)]).rc == \
        pd.PAM_AUTHINFO_UNAVAIL                                     # refused: not in the group
    assert pd.run(confdir, svc, ops, ["wrong password", code_at(ops_totp)]).rc == \
        pd.PAM_AUTH_ERR                                              # refused from the copy
    assert pd.run(confdir, svc, ops, [PASSWORD, code_at(ops_totp)]).rc == \
        pd.PAM_SUCCESS                                               # break-glass

    def outage_events() -> list[dict]:
        return [e for e in b.audit_events()[before:] if e["user"] in (ops, dev)]
    # a grant is audited once the shim has the verdict: just after pam_authenticate returns
    assert eventually(lambda: len(outage_events()) >= 3)
    outage = outage_events()
    assert [(e["event"], e["user"]) for e in outage] == [
        ("login_fail", dev), ("login_fail", ops), ("login_ok", ops)], outage
    assert outage[0]["reason"] == "database_unavailable"
    assert outage[2].get("break_glass") is True
    assert eventually(lambda: spool.exists() and
                      len(spool.read_text().splitlines()) >= 3, 5)
    assert oct(spool.stat().st_mode & 0o777) == "0o600" and spool.stat().st_uid == 0

    # `jctotp audit` in the outage: the host's own file, and a notice on stderr
    local = b.cli("audit", "--json")
    assert local.returncode == 0, local.stderr
    assert "fleet database is unavailable" in local.stderr
    assert "only this host's (host-b) own audit events" in local.stderr
    shown = [(e["event"], e["user"]) for e in json.loads(local.stdout) if e["user"] in (ops, dev)]
    assert shown[-3:] == [(e["event"], e["user"]) for e in outage]

    b.kill()                      # kill -9 in the outage: the spool is on disk
    b.start()                     # starts while the database is down
    pg.start()
    pg.healthy()

    def shipped() -> list[dict]:
        return [e for e in fleet_events(a) if e.get("spooled") and e["host"] == "host-b"
                and e["user"] in (ops, dev)]
    assert eventually(lambda: len(shipped()) == 3, 20), fleet_events(a)
    got = shipped()
    assert [(e["event"], e["user"]) for e in got] == [(e["event"], e["user"]) for e in outage]
    assert [e["ts"] for e in got] == [e["ts"] for e in outage]      # their own times
    assert got[2].get("break_glass") is True
    assert eventually(lambda: spool.stat().st_size == 0, 5)
    verified = a.cli("audit", "--verify")
    assert verified.returncode == 0 and "audit chains intact" in verified.stdout, \
        verified.stdout + verified.stderr


def test_the_spool_is_bounded_and_says_when_it_overflowed(tmp_path):
    spool = Spool(tmp_path / "audit-spool", max_bytes=400)
    rows = [(1000.0 + i, "h", "login_fail", f"u{i}", {"reason": "database_unavailable"})
            for i in range(20)]
    kept = [spool.append([r]) for r in rows]
    assert kept[0] and not all(kept)
    size = (tmp_path / "audit-spool").stat().st_size
    assert size < 400 + 300                       # bounded (one overflow line past it)
    assert oct((tmp_path / "audit-spool").stat().st_mode & 0o777) == "0o600"
    got: list = []
    assert spool.ship(got.extend) == len(got)
    assert got[-1][2] == OVERFLOW and all(r[4]["spooled"] for r in got)
    assert [r[0] for r in got] == sorted(r[0] for r in got)
    assert not spool.pending()

    def down(rows):   # the database refuses: the spool stays as it was
        raise OSError("no")
    spool.append(rows[:2])
    with pytest.raises(OSError):
        spool.ship(down)
    assert spool.pending() and len((tmp_path / "audit-spool").read_text().splitlines()) == 2
    os.chmod(tmp_path / "audit-spool", 0o644)    # widened by hand: root-only again
    spool.append(rows[2:3])
    assert oct((tmp_path / "audit-spool").stat().st_mode & 0o777) == "0o600"


def _keyed(copy: Path) -> list[str]:
    """The users the break-glass copy holds with their key (an enrolled one)."""
    with sqlite3.connect(f"file:{copy}?mode=ro", uri=True) as db:
        return [r[0] for r in db.execute("SELECT name FROM users WHERE totp_secret IS NOT NULL")]
