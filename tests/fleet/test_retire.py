"""Retiring and re-keying one host (issue 22): a removed host's break-glass copy does
not outlive its role, the copy stays root's only, and one host's database password
is replaced without touching any other host."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

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
    b = make_host("b", break_glass_group=group, start=False)
    totp = a.add_user(ops)
    a.add_user(f"{prefix}dev")
    # a host role gets only the keys the owner listed for break-glass (issue 22)
    listed = a.cli("fleet", "break-glass", "--admin-database", pg_uri, ops)
    assert listed.returncode == 0, listed.stderr
    b.start()
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


def test_host_add_client_cert_logs_in_by_its_certificate(make_host, confdir, pg, pg_uri):
    """`--client-cert`: a key and a certificate (CN = the role) signed by the fleet CA;
    with the CA in ssl_ca_file and a `hostssl ... cert` line for the role, the host
    gets in with no password at all, and not without its certificate."""
    admin = (f"{pg_uri}&sslmode=verify-full&sslrootcert="
             f"{quote(str(pg.ca_file), safe='/')}")
    a = make_host("a", role=False)
    totp = a.add_user("alice")
    out = Path(a.dir) / "certhost"
    done = a.cli("fleet", "host", "add", "certhost", "--admin-database", admin, "--out",
                 str(out), "--passfile", str(out / "pgpass"), "--client-cert")
    assert done.returncode == 0, done.stderr
    assert "hostssl DBNAME" in done.stdout
    assert oct((out / "client.key").stat().st_mode & 0o777) == "0o600"
    assert oct((Path(a.config["state_dir"]) / "fleet-ca.key").stat().st_mode & 0o777) == "0o600"
    fragment = yaml.safe_load((out / "config.yaml").read_text())
    uri = fragment["database"]
    assert "sslcert=" in uri and "sslkey=" in uri and "sslmode=verify-full" in uri
    role = uri.split("://")[1].split("@")[0]
    (out / "pgpass").write_text("")                      # no password: the certificate only
    ca = pg.dir / "fleet-ca.crt"
    ca.write_bytes((out / "fleet-ca.crt").read_bytes())
    os.chmod(ca, 0o644)
    hba = pg.dir / "data" / "pg_hba.conf"
    before = hba.read_text()
    try:
        hba.write_text(f"hostssl all {role} 127.0.0.1/32 cert\n" + before)
        pg.psql(f"ALTER SYSTEM SET ssl_ca_file = '{ca}'; SELECT pg_reload_conf();")
        time.sleep(0.5)
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT session_user").fetchone()[0] == role
        parts = urlsplit(uri)
        query = {k: v for k, v in parse_qsl(parts.query) if k not in ("sslcert", "sslkey")}
        with pytest.raises(psycopg.OperationalError):   # TLS, but no certificate: refused
            psycopg.connect(urlunsplit(parts._replace(query=urlencode(query)))).close()
        c = make_host("c", role=False, start=False)
        c.config.update(database=uri, host_name="certhost")
        try:
            c.start()                                    # a host of the fleet by its certificate
            assert pd.run(confdir, service(confdir, c), "alice",
                          [PASSWORD, code_at(totp)]).rc == pd.PAM_SUCCESS
        finally:
            c.stop()
    finally:
        hba.write_text(before)
        pg.psql("ALTER SYSTEM RESET ssl_ca_file; SELECT pg_reload_conf();")
