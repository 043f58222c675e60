"""A PostgreSQL role per host of the fleet (issue 22): SQL for `jctotp fleet host ...`.

Each host logs in as its own LOGIN role, a member of the fleet's group role
(`jctotp_hosts_<fleet id>`), which holds the only privileges a login needs
(GRANTS): no UPDATE/DELETE on audit rows or their chain heads, no hosts
table, no DDL (only the
schema's owner may). Role names are cluster-wide, so they carry the fleet's id
(jctotp_meta 'fleet_id'): two fleets can share one server. The audit trigger
takes the host name of a row from `session_user`'s entry in `fleet_hosts`, so a
host cannot write rows under another host's name.

These run as the schema's owner (`--admin-database`: CREATEROLE, and
pg_signal_backend to end a removed host's sessions at once).
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from . import pg_codecheck, pg_policy, pg_userwrites
from .pg_audit import CHAIN_FUNCTION, pin_search_path

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")

# Migration 4 (see postgres.MIGRATIONS).
MIGRATION = f"""
    CREATE TABLE fleet_hosts (
        name       TEXT PRIMARY KEY,
        role_name  TEXT NOT NULL UNIQUE,
        added_at   DOUBLE PRECISION NOT NULL,
        removed_at DOUBLE PRECISION
    );
    REVOKE ALL ON fleet_hosts, audit_heads FROM PUBLIC;
    INSERT INTO jctotp_meta VALUES
        ('fleet_id', substr(md5(random()::text || clock_timestamp()::text), 1, 8))
        ON CONFLICT DO NOTHING;
    {CHAIN_FUNCTION}
    -- `jctotp fleet host list` from any host: names and times, never a role's name
    CREATE FUNCTION jctotp_fleet_hosts()
        RETURNS TABLE (name TEXT, added_at DOUBLE PRECISION, removed_at DOUBLE PRECISION,
                       last_seen DOUBLE PRECISION, sessions BIGINT)
        LANGUAGE sql STABLE SECURITY DEFINER AS $$
        SELECT h.name, h.added_at, h.removed_at,
               (SELECT e.ts FROM audit_events e WHERE e.host_name = h.name
                 ORDER BY e.seq DESC LIMIT 1),
               (SELECT count(*) FROM pg_stat_activity a WHERE a.usename = h.role_name)
          FROM fleet_hosts h ORDER BY h.name
    $$;
    {pin_search_path("jctotp_fleet_hosts()")}
    {pin_search_path("jctotp_audit_chain()")}
    REVOKE EXECUTE ON FUNCTION jctotp_audit_link(TEXT, DOUBLE PRECISION, TEXT, TEXT, JSONB)
        FROM PUBLIC;
"""

# What a host's login, enrollment, recovery codes, lockout and the admin verbs of the
# `jctotp` CLI need, and nothing more: audit rows only appended, no hosts table, no DDL.
GRANTS = """
    GRANT SELECT ON users TO {group};   -- written through pg_userwrites.py's functions
    GRANT SELECT, INSERT ON audit_events TO {group};
    GRANT SELECT ON audit_heads TO {group};   -- `jctotp audit --verify` from any host
    GRANT USAGE ON SEQUENCE audit_events_id_seq TO {group};
    GRANT SELECT ON jctotp_meta TO {group};
    -- the change counter (migration 2): bumped by the users trigger, polled through PgBouncer
    GRANT SELECT, UPDATE ON jctotp_changes TO {group};
""" + pg_policy.GRANTS   # the fleet's policy (issue 21): read, set through its function


def fleet_id(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT value FROM jctotp_meta WHERE key = 'fleet_id'").fetchone()
    if row is None:
        raise psycopg.ProgrammingError("the fleet database has no fleet_id (schema too old)")
    return str(row[0])


def group_role(conn: psycopg.Connection[Any]) -> str:
    return f"jctotp_hosts_{fleet_id(conn)}"


def role_for(conn: psycopg.Connection[Any], name: str) -> str:
    return f"jctotp_{fleet_id(conn)}_{name.lower()}"


def grant(conn: psycopg.Connection[Any]) -> str:
    """Make the group role (once) and give it GRANTS (idempotent): returns its name."""
    group = group_role(conn)
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (group,)).fetchone()
    if not exists:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
    conn.execute(sql.SQL(GRANTS).format(group=sql.Identifier(group)))
    pg_codecheck.grant(conn, group)   # recovery codes without their hashes; the checks
    pg_userwrites.grant(conn, group)  # every write to a user: through its functions
    return group


def renew_grants(conn: psycopg.Connection[Any]) -> None:
    """`fleet init --admin-database`: GRANTS again when there are host roles (a new
    schema version may have brought a table they need)."""
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                    (group_role(conn),)).fetchone():
        grant(conn)


def add(conn: psycopg.Connection[Any], name: str, password: str, now: float) -> str:
    """A LOGIN role for host `name` with `password` (sent only as a SCRAM verifier,
    never in clear text: no server log can show it). Returns the role's name."""
    group = grant(conn)
    role = role_for(conn, name)
    known = conn.execute("SELECT removed_at FROM fleet_hosts WHERE name = %s",
                         (name,)).fetchone()
    if known is not None and known[0] is None:
        raise ValueError(f"host {name!r} is already in the fleet (fleet host remove first)")
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(),
                                            b"scram-sha-256").decode()
    # a fresh role, never one left over: its old sessions and grants do not come back
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        raise ValueError(f"a role {role} already exists on the server: drop it first")
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
        sql.Identifier(role), sql.Literal(verifier), sql.Identifier(group)))
    conn.execute("INSERT INTO fleet_hosts VALUES (%s, %s, %s, NULL) ON CONFLICT (name) "
                 "DO UPDATE SET role_name = EXCLUDED.role_name, added_at = EXCLUDED.added_at, "
                 "removed_at = NULL", (name, role, now))
    return role


def new_password(conn: psycopg.Connection[Any], name: str, password: str) -> str:
    """`fleet host rotate`: host `name`'s role gets `password` (as a SCRAM verifier);
    the old one is refused from the next connection on. Other hosts: untouched."""
    row = conn.execute("SELECT role_name FROM fleet_hosts WHERE name = %s "
                       "AND removed_at IS NULL", (name,)).fetchone()
    if row is None:
        raise ValueError(f"no host {name!r} in the fleet (fleet host list)")
    role = str(row[0])
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(),
                                            b"scram-sha-256").decode()
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role),
                                                             sql.Literal(verifier)))
    return role


def revoke(conn: psycopg.Connection[Any], name: str, now: float) -> str:
    """Step 1 of removal, committed before step 2: no new login, no privilege left
    (membership checks are live, so its open sessions lose them at once too)."""
    row = conn.execute("SELECT role_name FROM fleet_hosts WHERE name = %s "
                       "AND removed_at IS NULL", (name,)).fetchone()
    if row is None:
        raise ValueError(f"no host {name!r} in the fleet (fleet host list)")
    role = str(row[0])
    ident = sql.Identifier(role)
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(ident))
        conn.execute(sql.SQL("REVOKE {} FROM {}").format(
            sql.Identifier(group_role(conn)), ident))
    conn.execute("UPDATE fleet_hosts SET removed_at = %s WHERE name = %s", (now, name))
    return role


def end_sessions(conn: psycopg.Connection[Any], role: str) -> int:
    """Step 2: end the removed host's open sessions, then drop its role."""
    row = conn.execute("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                       "FROM pg_stat_activity WHERE usename = %s", (role,)).fetchone()
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    return int(row[0]) if row else 0


def listing(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """(name, added_at, removed_at, last_seen, sessions) of every host ever added."""
    return conn.execute("SELECT * FROM jctotp_fleet_hosts()").fetchall()
