"""The fleet audit's hash chains (issue 22): SQL for postgres.py, kept apart from it.

Each row of `audit_events` carries `seq` (1, 2, ... per host) and `row_hash` =
sha256 over the canonical row (seq, ts as its 8 IEEE bytes, host, event, user,
fields as jsonb text) and the previous row's hash of that host. The database
computes both in a BEFORE INSERT trigger (SECURITY DEFINER, owned by the schema's
owner), so a host cannot forge them; `audit_heads` holds each host's last seq and
hash, and its row lock serialises one host's inserts. Updates, deletes and
truncation of audit rows are refused by a trigger; the owner can still disable it,
which is what `jctotp audit --verify` is for: it recomputes every chain and names
a row whose hash does not match (edited), a gap in seq (deleted), or a chain
whose head is past its last row (deleted at the end).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def pin_search_path(function: str) -> str:
    """SQL: a SECURITY DEFINER function resolves names in the schema it was made in,
    never in a caller's (pg_temp last: no temporary table can stand in for ours)."""
    return (f"DO $$ BEGIN EXECUTE format('ALTER FUNCTION {function} SET search_path = "
            "%I, pg_temp', current_schema()); END $$;")


# Migration 3 (see postgres.MIGRATIONS): chains the rows already there, in id order.
MIGRATION = f"""
    CREATE FUNCTION jctotp_audit_hash(seq BIGINT, ts DOUBLE PRECISION, host TEXT,
                                      event TEXT, usr TEXT, fields JSONB, prev TEXT)
        RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
        SELECT encode(sha256(convert_to(jsonb_build_array(
            seq, encode(float8send(ts), 'hex'), host, event, usr, fields, prev)::text,
            'UTF8')), 'hex')
    $$;
    CREATE TABLE audit_heads (
        host_name TEXT PRIMARY KEY,
        seq       BIGINT NOT NULL,
        hash      TEXT NOT NULL
    );
    ALTER TABLE audit_events ADD COLUMN seq BIGINT, ADD COLUMN row_hash TEXT;
    -- one UPDATE advances the head: its row lock holds the host's next insert until
    -- this transaction ends, so one host's chain never forks
    CREATE FUNCTION jctotp_audit_link(host TEXT, ts DOUBLE PRECISION, event TEXT,
                                      usr TEXT, fields JSONB, OUT seq BIGINT,
                                      OUT hash TEXT) LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    BEGIN
        UPDATE audit_heads h SET seq = h.seq + 1,
               hash = jctotp_audit_hash(h.seq + 1, ts, host, event, usr, fields, h.hash)
         WHERE h.host_name = host RETURNING h.seq, h.hash INTO seq, hash;
        IF NOT FOUND THEN
            INSERT INTO audit_heads VALUES (host, 0, '') ON CONFLICT DO NOTHING;
            UPDATE audit_heads h SET seq = h.seq + 1,
                   hash = jctotp_audit_hash(h.seq + 1, ts, host, event, usr, fields, h.hash)
             WHERE h.host_name = host RETURNING h.seq, h.hash INTO seq, hash;
        END IF;
    END $$;
    DO $$
    DECLARE r RECORD; link RECORD;
    BEGIN
        FOR r IN SELECT * FROM audit_events ORDER BY id LOOP
            link := jctotp_audit_link(r.host_name, r.ts, r.event, r."user", r.fields);
            UPDATE audit_events SET seq = link.seq, row_hash = link.hash WHERE id = r.id;
        END LOOP;
    END $$;
    ALTER TABLE audit_events ALTER COLUMN seq SET NOT NULL,
                             ALTER COLUMN row_hash SET NOT NULL;
    CREATE UNIQUE INDEX audit_events_chain ON audit_events (host_name, seq);
    CREATE FUNCTION jctotp_audit_chain() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER AS $$
    DECLARE link RECORD;
    BEGIN
        link := jctotp_audit_link(NEW.host_name, NEW.ts, NEW.event, NEW."user", NEW.fields);
        NEW.seq := link.seq;
        NEW.row_hash := link.hash;
        RETURN NEW;
    END $$;
    CREATE TRIGGER audit_chain BEFORE INSERT ON audit_events FOR EACH ROW
        EXECUTE FUNCTION jctotp_audit_chain();
    CREATE FUNCTION jctotp_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END $$;
    CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_events
        FOR EACH STATEMENT EXECUTE FUNCTION jctotp_audit_append_only();
    {pin_search_path("jctotp_audit_chain()")}
    {pin_search_path("jctotp_audit_link(TEXT, DOUBLE PRECISION, TEXT, TEXT, JSONB)")}
"""

# Migration 4 (pg_hosts.py) replaces the trigger's function: with host roles, a row's
# host is the one of the role that logged in (session_user), whatever the row says.
CHAIN_FUNCTION = """
    CREATE OR REPLACE FUNCTION jctotp_audit_chain() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER AS $$
    DECLARE link RECORD; mine TEXT;
    BEGIN
        SELECT name INTO mine FROM fleet_hosts WHERE role_name = session_user;
        IF FOUND THEN
            NEW.host_name := mine;
        END IF;
        link := jctotp_audit_link(NEW.host_name, NEW.ts, NEW.event, NEW."user", NEW.fields);
        NEW.seq := link.seq;
        NEW.row_hash := link.hash;
        RETURN NEW;
    END $$;
"""

# Every row that breaks its host's chain: a hash that does not match (edited), or a
# seq that does not follow the previous one (rows deleted before it).
BROKEN_ROWS = """
    SELECT host_name, seq, id, ts, event, "user", prev_seq, hash_ok FROM (
        SELECT host_name, seq, id, ts, event, "user",
               lag(seq) OVER w AS prev_seq,
               row_hash = jctotp_audit_hash(seq, ts, host_name, event, "user", fields,
                                            coalesce(lag(row_hash) OVER w, '')) AS hash_ok
          FROM audit_events WINDOW w AS (PARTITION BY host_name ORDER BY seq)) chained
     WHERE coalesce(prev_seq, 0) <> seq - 1 OR NOT hash_ok
     ORDER BY host_name, seq
"""

# Each host's head against its last row: rows deleted at the end, or the last row
# edited together with its hash.
HEADS = """
    SELECT h.host_name, h.seq, h.hash, last.seq, last.row_hash, count.rows
      FROM audit_heads h
      LEFT JOIN LATERAL (SELECT seq, row_hash FROM audit_events e
                          WHERE e.host_name = h.host_name ORDER BY seq DESC LIMIT 1) last ON TRUE
      LEFT JOIN LATERAL (SELECT count(*) AS rows FROM audit_events e
                          WHERE e.host_name = h.host_name) count ON TRUE
     ORDER BY h.host_name
"""
ORPHANS = ("SELECT DISTINCT host_name FROM audit_events e WHERE NOT EXISTS "
           "(SELECT 1 FROM audit_heads h WHERE h.host_name = e.host_name) ORDER BY 1")

# every host with a chain, and every host role ever added (pg_hosts.py)
HOSTS = "SELECT host_name FROM audit_heads UNION SELECT name FROM jctotp_fleet_hosts() ORDER BY 1"

Query = Callable[[str], list[tuple[Any, ...]]]


def _row(host: str, seq: int, row_id: int, ts: float, event: str, user: str | None) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    return f"{host}: row seq {seq} (id {row_id}, {when} {event} {user or '-'})"


def verify(query: Query) -> dict[str, Any]:
    """Recompute every host's chain. {"hosts": n, "rows": n, "problems": [sentence]}."""
    problems: list[str] = []
    for host, seq, row_id, ts, event, user, prev_seq, hash_ok in query(BROKEN_ROWS):
        if (prev_seq or 0) != seq - 1:
            first = (prev_seq or 0) + 1
            gone = f"seq {first}" if first == seq - 1 else f"seqs {first}..{seq - 1}"
            problems.append(f"{host}: row {gone} deleted (a gap before "
                            f"{_row(host, seq, row_id, ts, event, user)[len(host) + 2:]})")
        elif not hash_ok:
            problems.append(f"{_row(host, seq, row_id, ts, event, user)} was edited: its "
                            "hash does not match its content and the row before it")
    hosts = rows = 0
    for host, head_seq, head_hash, last_seq, last_hash, count in query(HEADS):
        hosts += 1
        rows += count
        if last_seq is None or last_seq < head_seq:
            first = (last_seq or 0) + 1
            gone = f"seq {first}" if first == head_seq else f"seqs {first}..{head_seq}"
            problems.append(f"{host}: row {gone} deleted (at the end of its chain)")
        elif last_seq > head_seq or last_hash != head_hash:
            problems.append(f"{host}: row seq {last_seq} (its last) does not match the "
                            "chain's head: edited, or rows added outside the chain")
    for (host,) in query(ORPHANS):
        problems.append(f"{host}: audit rows with no chain head (added outside the chain)")
    return {"hosts": hosts, "rows": rows, "problems": problems}
