"""Retiring and re-keying one host (issue 22): a removed host's break-glass copy does
not outlive its role, the copy stays root's only, and one host's database password
is replaced without touching any other host."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pamdriver as pd
import psycopg
import pytest
import yaml
from fleetlib import eventually, service

from testlib import code_at

pytestmark = pytest.mark.fleet

PASSWORD = "correct horse battery"


@pytest.fixture
def host_roles() -> bool:
    return True


def copied(copy: Path) -> list[str]:
    if not copy.exists():
        return []
    with sqlite3.connect(f"file:{copy}?mode=ro", uri=True) as db:
        return [r[0] for r in db.execute("SELECT name FROM users")]


def test_the_break_glass_copy_is_root_only_and_dropped_when_the_host_is_removed(
        make_host, confdir, pg, pg_uri, scratch_accounts):
    prefix = scratch_accounts
    group, ops = f"{prefix}bg", f"{prefix}ops"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-G", group, ops], check=True)
    a = make_host("a")
    b = make_host("b", break_glass_group=group)
    totp = a.add_user(ops)
    a.add_user(f"{prefix}dev")
    state = Path(b.config["state_dir"])
    copy, matched = state / "break-glass.db", state / "break-glass.matched"
    assert eventually(lambda: copied(copy) == [ops])                # the group only

    os.chmod(copy, 0o644)                          # widened by hand: narrowed at the next sync
    a.ok("user.add", name=f"{prefix}x", password=PASSWORD, mfa=False, admin=False,
         system_account=False)                     # a change: B's copy is refreshed
    assert eventually(lambda: copy.stat().st_mode & 0o777 == 0o600)
    assert "made root's only (0600) again" in b.log.read_text()

    gone = a.cli("fleet", "host", "remove", "host-b", "--admin-database", pg_uri)
    assert gone.returncode == 0, gone.stderr
    svc = service(confdir, b, timeout=5)
    assert pd.run(confdir, svc, ops, [PASSWORD, code_at(totp)]).rc == pd.PAM_AUTHINFO_UNAVAIL
    assert eventually(lambda: not matched.exists() and copied(copy) == []), b.log.read_text()
    for path in (copy, state / "break-glass.db-wal"):   # nothing of it left on the disk
        assert not path.exists() or ops.encode() not in path.read_bytes(), path
    assert b.log.read_text().count("break-glass copy is deleted") == 1

    pg.stop()                                     # an outage now: the copy serves nobody
    assert pd.run(confdir, svc, ops, [PASSWORD, code_at(totp, 30)]).rc == \
        pd.PAM_AUTHINFO_UNAVAIL
    pg.start()
    pg.healthy()


def test_host_rotate_replaces_one_hosts_password_only(make_host, confdir, pg_uri):
    a = make_host("a", max_attempts=100)
    b = make_host("b", max_attempts=100)
    totp = a.add_user("alice")
    old_b = Path(b.dir) / "fleet-credentials" / "pgpass"
    old_line = old_b.read_text()
    with psycopg.connect(b.config["database"]) as conn:   # the old password works
        conn.execute("SELECT 1")
    out = Path(b.dir) / "rotated"
    done = a.cli("fleet", "host", "rotate", "host-b", "--admin-database", pg_uri,
                 "--out", str(out), "--passfile", str(old_b))
    assert done.returncode == 0, done.stderr
    assert "has a new password" in done.stdout
    assert oct((out / "pgpass").stat().st_mode & 0o777) == "0o600"
    assert (out / "pgpass").read_text() != old_line
    assert yaml.safe_load((out / "config.yaml").read_text())["database"] == \
        b.config["database"]                             # same role, same URI
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(b.config["database"]).close()    # the old password: refused
    # A is untouched: logins, and its own password
    assert pd.run(confdir, service(confdir, a), "alice",
                  [PASSWORD, code_at(totp)]).rc == pd.PAM_SUCCESS
    with psycopg.connect(a.config["database"]) as conn:
        conn.execute("SELECT 1")
    # B installs its new pgpass (where its URI's passfile= points) and restarts
    old_b.write_text((out / "pgpass").read_text())
    b.stop()
    b.start()
    b.set_clock(30)
    assert pd.run(confdir, service(confdir, b), "alice",
                  [PASSWORD, code_at(totp, 30)]).rc == pd.PAM_SUCCESS
    unknown = a.cli("fleet", "host", "rotate", "host-z", "--admin-database", pg_uri,
                    "--out", str(out))
    assert unknown.returncode != 0 and "no host 'host-z'" in unknown.stderr
