"""A stolen host cannot re-key a user (issue 22): host roles write the users table only
through SECURITY DEFINER functions (store/pg_userwrites.py), which refuse a new key for
an enrolled user without a proof of their current code, and audit the admin verbs
that weaken a user (or refuse them: the fleet policy `host_admin_verbs: false`)."""

from __future__ import annotations

import json
import os
import re

import pamdriver as pd
import psycopg
import pyotp
import pytest
from fleetlib import as_host, service
from testlib import NEW_KEY_CODE, as_user, code_at

pytestmark = pytest.mark.fleet

PASSWORD = "correct horse battery"
NOBODY = 65534


@pytest.fixture
def host_roles() -> bool:
    return True


def test_a_stolen_host_cannot_rekey_unlock_or_remove_a_user(make_host, confdir):
    a, b = make_host("a"), make_host("b")
    totp = a.add_user("alice")
    # she logs in on A (a right code typed into B would be B's proof: see below)
    svc = service(confdir, a)
    assert pd.run(confdir, svc, "alice", [PASSWORD, code_at(totp)]).rc == pd.PAM_SUCCESS
    key = os.urandom(20)
    refused = [
        ("UPDATE users SET totp_secret = NULL WHERE name = 'alice'", ()),
        ("UPDATE users SET failed_count = 0, locked_at = NULL", ()),
        ("UPDATE users SET last_step = -1 WHERE name = 'alice'", ()),
        ("DELETE FROM users", ()),
        ("INSERT INTO users (name, created_at) VALUES ('mallory', 1)", ()),
        ("SELECT jctotp_put_key('alice', %s)", (key,)),
        # a recovery code of the host's own making, or none left for alice
        ("INSERT INTO recovery_codes (\"user\", code_hash) VALUES ('alice', 'x')", ()),
        ("DELETE FROM recovery_codes", ()),
    ]
    with as_host(b) as db:
        for statement, params in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute(statement, params)
        # the functions the host does have: no new key without alice's current code
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as said:
            db.execute("SELECT jctotp_set_key('alice', %s)", (key,))
        assert "current code" in str(said.value)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("SELECT jctotp_set_recovery_codes('alice', ARRAY['x'])")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("SELECT jctotp_update_user('alice', '{\"last_step\": -1}', 'root')")
    # alice's key is the one she had, her used code still used
    assert a.user("alice")["mfa"] == "active"
    assert pd.run(confdir, svc, "alice", [PASSWORD, code_at(totp)]).rc == pd.PAM_AUTH_ERR
    b.set_clock(30)
    assert pd.run(confdir, service(confdir, b), "alice",
                  [PASSWORD, code_at(totp, 30)]).rc == pd.PAM_SUCCESS


def test_self_reset_through_a_host_role_needs_the_current_code(make_host, confdir):
    a, b = make_host("a"), make_host("b")
    old = a.add_user("nobody")
    sock = b.config["control_socket"]
    wrong = f"{(int(code_at(old)) + 1) % 10**6:06d}"
    assert as_user(NOBODY, sock, "reset", answers=[wrong])["exit"] == 1
    out = as_user(NOBODY, sock, "reset", answers=[code_at(old), NEW_KEY_CODE, ""])
    assert out["exit"] == 0, out
    new = pyotp.TOTP(out["key"])
    a.set_clock(60)
    svc = service(confdir, a)
    assert pd.run(confdir, svc, "nobody", [PASSWORD, code_at(old, 60)]).rc == pd.PAM_AUTH_ERR
    a.set_clock(90)
    assert pd.run(confdir, svc, "nobody", [PASSWORD, code_at(new, 90)]).rc == pd.PAM_SUCCESS
    # new recovery codes with a fresh code, through the host role too
    b.set_clock(120)
    out = as_user(NOBODY, sock, "recovery-codes", answers=[code_at(new, 120), ""])
    assert out["exit"] == 0 and out["data"]["recovery_codes"] > 0, out


def test_an_admin_reset_from_a_host_is_audited_by_the_database(make_host, pg_uri):
    a, b = make_host("a"), make_host("b")
    a.add_user("alice")
    b.ok("mfa.reset", names=["alice"])
    b.ok("audit")   # B's own queue flushed: a second row would be there now
    with psycopg.connect(pg_uri, autocommit=True) as owner:
        rows = owner.execute(
            "SELECT host_name, fields FROM audit_events WHERE event = 'mfa_reset' "
            "AND \"user\" = 'alice'").fetchall()
    assert len(rows) == 1, rows
    host, fields = rows[0]
    assert host == "host-b" and fields["actor"] == "root" and fields["via"] == "database"
    assert a.cli("audit", "--verify").returncode == 0


def lock_out(confdir, host, name: str):
    """Lock `name` on `host` (max_attempts=2) with wrong passwords; returns its service."""
    svc = service(confdir, host)
    for _ in range(2):
        pd.run(confdir, svc, name, ["wrong password", "000000"])
    assert host.user(name)["locked"]
    return svc


def test_host_admin_verbs_false_leaves_weakening_verbs_to_the_owner(make_host, confdir):
    owner = make_host("o", role=False)   # jctotpd connected as the schema's owner
    b = make_host("b", max_attempts=2)
    totp = owner.add_user("alice")
    assert owner.ok("policy.set", key="host_admin_verbs", value=False)["changed"]
    lock_out(confdir, b, "alice")
    for verb, args in (("mfa.reset", {"names": ["alice"]}), ("unlock", {"names": ["alice"]}),
                       ("mfa.disable", {"names": ["alice"]}), ("user.remove", {"name": "alice"}),
                       ("user.set", {"name": "alice", "max_attempts": 100})):
        refused = b.request(verb, **args)
        assert refused.exit != 0, verb
        assert "host_admin_verbs" in refused.message and "owner" in refused.message, \
            refused.message
        assert refused.message.count("\n") == 0, refused.message
    # nor can B turn the policy back on
    back = b.request("policy.set", key="host_admin_verbs", value=True)
    assert back.exit != 0 and "host_admin_verbs" in back.message
    assert b.user("alice")["locked"] and b.user("alice")["mfa"] == "active"
    # the owner can
    owner.ok("unlock", names=["alice"])
    assert not b.user("alice")["locked"]
    owner.set_clock(30)
    b.set_clock(30)
    assert pd.run(confdir, service(confdir, b), "alice",
                  [PASSWORD, code_at(totp, 30)]).rc == pd.PAM_SUCCESS
    owner.ok("mfa.reset", names=["alice"])
    assert b.user("alice")["mfa"] != "active"


def _enroller(offset: float = 0.0):
    """Answers a first login's enrollment like a person with a phone (the shown key)."""
    def answer(message, transcript):
        if message.text == "Directory password: ":
            return PASSWORD
        if "to finish" in message.text:
            key = re.findall(r"by hand: ([A-Z2-7 ]+)\n", "\n".join(m.text for m in transcript))
            return code_at(pyotp.TOTP(key[-1].replace(" ", "")), offset)
        if message.text.startswith("Press Enter"):
            return ""
        raise AssertionError(f"unexpected prompt {message.text!r}")
    return answer


def test_enrollment_lockout_unlock_and_reset_through_a_host_role(make_host, confdir, pg_uri):
    a, b = make_host("a"), make_host("b", max_attempts=2)
    a.add_user("carol", mfa=False)
    b.ok("mfa.enable", names=["carol"], enrollment_days=7)
    svc = service(confdir, b)
    assert pd.run(confdir, svc, "carol", _enroller(), call="both").rc == pd.PAM_SUCCESS
    assert a.user("carol")["mfa"] == "active"
    for _ in range(2):
        assert pd.run(confdir, svc, "carol", ["wrong password", "000000"]).rc != pd.PAM_SUCCESS
    assert a.user("carol")["locked"]
    b.ok("unlock", names=["carol"])
    assert not a.user("carol")["locked"]
    b.ok("mfa.reset", names=["carol"], enrollment_days=3)
    b.set_clock(30)
    assert pd.run(confdir, svc, "carol", _enroller(30), call="both").rc == pd.PAM_SUCCESS
    assert a.user("carol")["mfa"] == "active"
    with psycopg.connect(pg_uri, autocommit=True) as owner:
        rows = owner.execute(
            "SELECT event, host_name, fields->>'actor', fields->>'via' FROM audit_events "
            "WHERE \"user\" = 'carol' AND event IN ('unlocked', 'mfa_reset') ORDER BY seq"
        ).fetchall()
    assert rows == [("unlocked", "host-b", "root", "database"),
                    ("mfa_reset", "host-b", "root", "database")], rows


def test_the_upgrade_takes_the_writes_from_host_roles_already_there(pg_cluster, monkeypatch):
    """A fleet whose hosts had roles before migration 8: the upgrade (as the owner)
    revokes their writes at once, not at the next `fleet init`."""
    from functools import partial

    from psycopg.conninfo import make_conninfo

    from pam_jctotp.store import pg_hosts, pg_userwrites
    from pam_jctotp.store.postgres import PostgresStore, schema

    uri, password = pg_cluster.new_database(), "a host password of forty characters, long"
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:6])
        m.setattr(pg_userwrites, "grant", lambda conn, group: None)   # (not there yet)
        m.setattr(pg_hosts, "GRANTS", pg_hosts.GRANTS.replace(   # the grants of then
            "GRANT SELECT ON users", "GRANT SELECT, INSERT, UPDATE, DELETE ON users"))
        old = PostgresStore(uri, create=True)
        role = old.administer(partial(pg_hosts.add, name="web1", password=password, now=0))
        old.close()
    host_uri = make_conninfo(uri, user=role, password=password, passfile="")
    with psycopg.connect(uri, autocommit=True) as owner:
        owner.execute("INSERT INTO users (name, created_at) VALUES ('alice', 0)")
    with psycopg.connect(host_uri, autocommit=True) as db:   # what a host could before
        db.execute("UPDATE users SET failed_count = 0 WHERE name = 'alice'")
    PostgresStore(uri).close()   # the owner's next start: migrations 7 and 8
    with psycopg.connect(host_uri, autocommit=True) as db:
        for statement in ("UPDATE users SET failed_count = 0 WHERE name = 'alice'",
                          "SELECT jctotp_put_key('alice', '\\x00112233445566778899'::bytea)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute(statement)
        assert db.execute("SELECT jctotp_reserve_attempt('alice', 1, 0, 5)"
                          ).fetchone() == (1,)


def test_a_sysadmin_on_a_host_runs_a_weakening_verb_as_the_owner(make_host, confdir, pg_uri):
    """`jctotp unlock NAME --admin-database URI` (fleet/owner.py): the verb the fleet
    policy refuses to the host's role, run on that host as the schema's owner."""
    b = make_host("b", max_attempts=2)
    totp = b.add_user("alice")
    assert b.ok("policy.set", key="host_admin_verbs", value=False)["changed"]
    svc = lock_out(confdir, b, "alice")
    refused = b.cli("unlock", "alice")
    assert refused.returncode == 4 and "host_admin_verbs" in refused.stderr, refused.stderr
    secret = b.cli("unlock", "alice", "--admin-database",
                   psycopg.conninfo.make_conninfo(pg_uri, password="x"))
    assert secret.returncode == 2 and "must not hold a password" in secret.stderr, secret
    assert b.user("alice")["locked"]
    done = b.cli("unlock", "alice", "--admin-database", pg_uri)
    assert done.returncode == 0, done.stderr
    # what the daemon would print for it
    assert done.stdout == "alice: unlocked (password and authenticator unchanged)\n", done
    assert not b.user("alice")["locked"]
    b.set_clock(30)
    assert pd.run(confdir, svc, "alice", [PASSWORD, code_at(totp, 30)]).rc == pd.PAM_SUCCESS
    with psycopg.connect(pg_uri, autocommit=True) as owner:
        rows = owner.execute(
            "SELECT host_name, fields->>'actor', fields->>'via' FROM audit_events "
            "WHERE event = 'unlocked' AND \"user\" = 'alice'").fetchall()
    assert rows == [("host-b", "root", None)], rows
    assert b.cli("audit", "--verify").returncode == 0
    reset = b.cli("--json", "mfa", "reset", "alice", "--admin-database", pg_uri)
    assert reset.returncode == 0 and json.loads(reset.stdout)["changed"], reset
    assert b.user("alice")["mfa"] != "active"
