"""The fleet audit is append-only and hash-chained per host (issue 22): the database
links every row to the previous row of its host, and `jctotp audit --verify` names a
row that was edited or deleted, even by the schema's owner."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg.types.json import Jsonb

pytestmark = pytest.mark.fleet


def owner(pg_uri: str) -> psycopg.Connection:
    """The schema's owner (role jctotp), as an attacker with the owner's password."""
    return psycopg.connect(pg_uri, autocommit=True)


def events(a, n: int) -> None:
    for i in range(n):
        a.ok("user.add", name=f"u{i}", password="correct horse battery", mfa=False,
             admin=False, system_account=False)


def test_an_edited_or_deleted_row_is_named_by_verify(make_host, pg_uri):
    a, b = make_host("a"), make_host("b")
    events(a, 4)
    b.ok("user.remove", name="u0")
    b.ok("user.remove", name="u1")
    b.ok("user.remove", name="u2")
    b.ok("audit")   # B's queue flushed (A's is by its own verify)
    intact = a.cli("audit", "--verify")
    assert intact.returncode == 0, intact.stderr
    assert "audit chains intact: 2 host(s)" in intact.stdout

    with owner(pg_uri) as db:
        # append-only: even the owner is refused until it disables the guard
        for sql in ("DELETE FROM audit_events", "UPDATE audit_events SET event = 'x'",
                    "TRUNCATE audit_events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute(sql)
        rows = dict(db.execute("SELECT host_name || ':' || seq, id FROM audit_events"
                               ).fetchall())
        db.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_append_only")
        db.execute("""UPDATE audit_events SET "user" = 'mallory' """
                   "WHERE host_name = 'host-a' AND seq = 2")
        db.execute("DELETE FROM audit_events WHERE host_name = 'host-b' AND seq = 2")
        db.execute("DELETE FROM audit_events WHERE host_name = 'host-a' "
                   "AND seq = (SELECT max(seq) FROM audit_events WHERE host_name = 'host-a')")
        last_a = max(int(k.split(":")[1]) for k in rows if k.startswith("host-a:"))

    broken = b.cli("audit", "--verify")
    assert broken.returncode != 0
    said = broken.stderr
    assert f"host-a: row seq 2 (id {rows['host-a:2']}," in said and "was edited" in said, said
    assert f"host-b: row seq 2 deleted (a gap before row seq 3 (id {rows['host-b:3']}," \
        in said, said
    assert f"host-a: row seq {last_a} deleted (at the end of its chain)" in said, said
    assert "3 problem(s)" in said, said


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(make_host, pg_uri):
    a = make_host("a")
    events(a, 3)
    a.ok("audit")   # flushed
    with owner(pg_uri) as db:
        db.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_append_only")
        # the forger knows the hash function: row 2 rewritten with a matching hash
        db.execute("""UPDATE audit_events e SET "user" = 'mallory',
            row_hash = jctotp_audit_hash(e.seq, e.ts, e.host_name, e.event, 'mallory',
                                         e.fields, p.row_hash)
            FROM audit_events p WHERE p.host_name = e.host_name AND p.seq = 1
              AND e.host_name = 'host-a' AND e.seq = 2""")
        third = db.execute("SELECT id FROM audit_events WHERE host_name = 'host-a' "
                           "AND seq = 3").fetchone()[0]
    broken = a.cli("audit", "--verify")
    assert broken.returncode != 0
    assert f"host-a: row seq 3 (id {third}," in broken.stderr, broken.stderr


def test_one_hosts_chain_holds_under_concurrent_inserts(make_host, pg_uri):
    """The database serialises one host's links: 4 writers x 50 rows, one chain."""
    a = make_host("a")

    def writer(k: int) -> None:
        with psycopg.connect(pg_uri, autocommit=True) as db:
            for i in range(50):
                db.execute('INSERT INTO audit_events (ts, host_name, event, "user", fields) '
                           "VALUES (%s, 'host-x', 'login_ok', %s, %s)",
                           (1e9 + i, f"w{k}", Jsonb({"i": i})))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with owner(pg_uri) as db:
        seqs = [r[0] for r in db.execute("SELECT seq FROM audit_events "
                                         "WHERE host_name = 'host-x' ORDER BY seq")]
    assert seqs == list(range(1, 201))
    ok = a.cli("audit", "--verify")
    assert ok.returncode == 0 and "intact" in ok.stdout, ok.stderr


def test_audit_host_names_an_unknown_host(make_host):
    a = make_host("a")
    a.add_user("alice")
    assert a.cli("audit", "--host", "host-a").returncode == 0
    out = a.cli("audit", "--host", "host-zz")
    assert out.returncode != 0
    assert "unknown host 'host-zz'" in out.stderr and "host-a" in out.stderr, out.stderr


def test_an_older_fleets_audit_rows_are_chained_by_the_upgrade(make_host, pg_uri):
    """A database of schema version 1 (before issue 22) with audit rows: the upgrade
    chains them per host in the order they were written, and --verify finds it intact."""
    from pam_jctotp.store.postgres import MIGRATIONS
    with owner(pg_uri) as db:
        db.execute("CREATE TABLE jctotp_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO jctotp_meta VALUES ('schema_version', '1')")
        db.execute(MIGRATIONS[0].encode())
        for i in range(6):
            db.execute('INSERT INTO audit_events (ts, host_name, event, "user", fields) '
                       "VALUES (%s, %s, 'login_ok', %s, %s)",
                       (1e9 + i, f"old-{i % 2}", f"u{i}", Jsonb({"n": i})))
    a = make_host("a")    # `fleet init` upgrades the schema (and makes the key)
    with owner(pg_uri) as db:
        chained = db.execute('SELECT host_name, seq, "user" FROM audit_events '
                             "WHERE host_name LIKE 'old-%' ORDER BY id").fetchall()
    assert chained == [(f"old-{i % 2}", i // 2 + 1, f"u{i}") for i in range(6)]
    ok = a.cli("audit", "--verify")
    assert ok.returncode == 0 and "intact" in ok.stdout, ok.stderr
