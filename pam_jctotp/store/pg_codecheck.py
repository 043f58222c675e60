"""Codes checked inside PostgreSQL (issue 22): no host role gets a TOTP secret or a
recovery code back from the fleet database.

The TOTP keys live in `jctotp_secrets`, a table no host role has any privilege on;
`users.totp_secret` holds only a random key id (16 bytes, not derived from the key:
"enrolled or not", and a change wakes the hosts' sync). A host reaches the keys
through SECURITY DEFINER functions owned by the schema's owner:

- `jctotp_check_code` checks a code: the ±window HMAC-SHA1 candidates (pgcrypto's
  hmac), the replay watermark (`last_step`) and its advance, the failure counter's
  reset on success, and the database's own guess ceiling, in ONE statement under the
  user's row lock; it returns only the outcome (totp / replay / wrong_code /
  recovery / throttled) and the step. A recovery code's keyed hash (the host
  computes it with the fleet key, as before) is compared and consumed there too.
  Since migration 7 the step comes from the database's clock, not the host's (see
  CHECK_FUNCTION_V7), and every compare is of per-call HMACs (constant time).
- `jctotp_put_key` writes a new key (enrollment): a host may write a key, never read one.
- `jctotp_break_glass_keys` returns the keys of the users named in
  `jctotp_break_glass` (the owner writes it: `jctotp fleet break-glass`), for the
  host-local copy of the break-glass group; nobody else's.

One home for the TOTP rule: the rule's parameters (digits, period, window; SHA-1)
are those of core/totp.py's `Totp`, copied into `jctotp_totp_rule` by the migration
and by `jctotp fleet init --admin-database` (the config's totp_*), and the SQL below
is RFC 4226's dynamic truncation written once; tests/fleet/test_codecheck.py holds
it to RFC 6238's vectors and to `Totp.match` on the same clock (hypothesis).

The guess ceiling (`guard_limit` wrong codes, or the user's own max_attempts up to
the config's 100, per `guard_interval` s of the database's clock, per user, counted
in `jctotp_secrets`; the owner may change both) is the lockout a host cannot reset:
host roles write the users table's counters through store/pg_userwrites.py's
functions (the login path and the admin verbs `unlock` etc. run on hosts), so the
policy's lockout alone would not bind a stolen host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from ..core.totp import Totp
from .pg_audit import pin_search_path

RULE = Totp()          # the defaults: 6 digits, 30 s, ±1 step, SHA-1
GUARD_LIMIT = 20       # wrong codes per user per GUARD_INTERVAL, whatever a host does
GUARD_INTERVAL = 900   # (seconds; the default fail_interval)

CHECK_SIGNATURE = "jctotp_check_code(TEXT, TEXT, TEXT, DOUBLE PRECISION, BOOLEAN, BOOLEAN)"
PUT_SIGNATURE = "jctotp_put_key(TEXT, BYTEA)"
BREAK_GLASS_SIGNATURE = "jctotp_break_glass_keys()"
KEY_ID_SIGNATURE = "jctotp_key_id_changed()"

# The RFC 4226 code of one step, in SQL (the one copy of Totp._code's arithmetic).
HOTP_FUNCTION = """
    CREATE FUNCTION jctotp_hotp(key BYTEA, step BIGINT, digits INTEGER) RETURNS TEXT
        LANGUAGE plpgsql IMMUTABLE STRICT AS $$
    DECLARE mac BYTEA; o INTEGER;
    BEGIN
        mac := hmac(int8send(step), key, 'sha1');
        o := get_byte(mac, 19) & 15;
        -- (SQL's bit operators share one precedence: every term in parentheses)
        RETURN lpad(((((get_byte(mac, o) & 127)::BIGINT << 24)
                      | (get_byte(mac, o + 1) << 16) | (get_byte(mac, o + 2) << 8)
                      | get_byte(mac, o + 3)) % (10 ^ digits)::BIGINT)::TEXT, digits, '0');
    END $$;
"""

# Parts of jctotp_check_code that migrations 6 and 7 share (text a migration ran: a
# change to them is a new migration's, never an edit here).
_LOCK_AND_CEILING = """
        -- the user's row lock serialises every check of this user, fleet-wide
        SELECT us.last_step, k.totp_key, k.guard_count, k.guard_start,
               greatest(r.guard_limit, least(coalesce(us.max_attempts, 0), 100)) AS guard_limit
          INTO u FROM users us
          LEFT JOIN jctotp_secrets k ON k.name = us.name AND k.totp_id = us.totp_secret
         WHERE us.name = p_name FOR UPDATE OF us;
        outcome := 'wrong_code';
        IF NOT FOUND OR u.totp_key IS NULL THEN
            RETURN;
        END IF;
        -- (a lock made after this attempt's reservation does not stop its check: the
        -- reservation admitted it, as on SQLite; the ceiling below binds every caller)
        IF u.guard_start IS NULL OR u.guard_start <= db_now - r.guard_interval THEN
            u.guard_count := 0;
            u.guard_start := db_now;
        ELSIF u.guard_count >= u.guard_limit THEN
            outcome := 'throttled';
            RETURN;
        END IF;
"""
_ACCEPT_STEP = """        IF step IS NOT NULL THEN
            IF NOT p_consume THEN
                outcome := 'totp';
            ELSIF step <= u.last_step THEN
                outcome := 'replay';
            ELSE
                UPDATE users SET last_step = step,
                       failed_count = CASE WHEN p_reset THEN 0 ELSE failed_count END,
                       fail_window_start = CASE WHEN p_reset THEN NULL
                                                ELSE fail_window_start END
                 WHERE name = p_name;
                outcome := 'totp';
            END IF;
"""
_COUNT_GUESS = """        UPDATE jctotp_secrets SET guard_start = u.guard_start,
               guard_count = CASE WHEN outcome IN ('totp', 'recovery') AND p_consume THEN 0
                                  WHEN outcome = 'wrong_code' THEN u.guard_count + 1
                                  ELSE u.guard_count END
         WHERE name = p_name;
"""

CHECK_FUNCTION = f"""
    CREATE FUNCTION jctotp_check_code(p_name TEXT, p_code TEXT, p_recovery TEXT,
                                      p_now DOUBLE PRECISION, p_consume BOOLEAN,
                                      p_reset BOOLEAN, OUT outcome TEXT, OUT step BIGINT)
        LANGUAGE plpgsql SECURITY DEFINER AS $$
    DECLARE r jctotp_totp_rule; u RECORD; db_now DOUBLE PRECISION; cur BIGINT;
            s BIGINT; code TEXT;
    BEGIN
        SELECT * INTO r FROM jctotp_totp_rule WHERE id = 1;
        db_now := extract(epoch FROM clock_timestamp());
{_LOCK_AND_CEILING}        IF p_code ~ ('^[0-9]{{' || r.digits || '}}$') THEN
            -- core/totp.py's Totp.step, the same IEEE expression (no float underflow)
            cur := CASE WHEN p_now < r.period THEN 0
                        ELSE floor(p_now / r.period)::BIGINT END;
            -- every candidate is computed: the time taken does not say which matched
            s := greatest(0, cur - r.drift);
            WHILE s <= cur + r.drift LOOP
                code := jctotp_hotp(u.totp_key, s, r.digits);
                IF code = p_code AND step IS NULL THEN
                    step := s;
                END IF;
                s := s + 1;
            END LOOP;
        END IF;
{_ACCEPT_STEP}        ELSIF p_recovery IS NOT NULL AND p_consume THEN
            UPDATE recovery_codes SET used_at = p_now
             WHERE "user" = p_name AND code_hash = p_recovery AND used_at IS NULL;
            IF FOUND THEN
                outcome := 'recovery';
            END IF;
        END IF;
{_COUNT_GUESS}    END $$;
"""

# Migration 7: the same function (CREATE OR REPLACE, the same signature: the hosts'
# grants and the REVOKE from PUBLIC hold), with two changes.
# - The step comes from the database's clock, not p_now: a stolen host passing a far
#   future time burnt the replay watermark (every later code a "replay", fleet-wide),
#   and an old time had captured codes checked at their time. A fleet whose owner set
#   jctotp_totp_rule.clock = 'host' takes p_now (test fleets, whose hosts move time
#   with set_clock; a host role cannot write that table). Not "p_now within a bounded
#   skew": any bound wide enough for the tests' clocks (days) is one a stolen host
#   can burn the watermark across, and a narrow one would only make the tests lie.
# - Codes and recovery hashes are compared as HMACs under a key drawn per call
#   (gen_random_bytes), every candidate and every unused recovery code, no early exit:
#   a plain `=` stops at the first differing byte, and its time would say how much of
#   a guess was right; the digests of a fresh key say nothing a caller can use.
CHECK_FUNCTION_V7 = f"""
    CREATE OR REPLACE FUNCTION jctotp_check_code(p_name TEXT, p_code TEXT, p_recovery TEXT,
                                      p_now DOUBLE PRECISION, p_consume BOOLEAN,
                                      p_reset BOOLEAN, OUT outcome TEXT, OUT step BIGINT)
        LANGUAGE plpgsql SECURITY DEFINER AS $$
    DECLARE r jctotp_totp_rule; u RECORD; db_now DOUBLE PRECISION; t DOUBLE PRECISION;
            cur BIGINT; s BIGINT; mac_key BYTEA := gen_random_bytes(32); want BYTEA;
            hit BOOLEAN; used TEXT; h TEXT;
    BEGIN
        SELECT * INTO r FROM jctotp_totp_rule WHERE id = 1;
        db_now := extract(epoch FROM clock_timestamp());
        t := CASE WHEN r.clock = 'host' AND p_now IS NOT NULL THEN p_now ELSE db_now END;
{_LOCK_AND_CEILING}        IF p_code ~ ('^[0-9]{{' || r.digits || '}}$') THEN
            -- core/totp.py's Totp.step, the same IEEE expression (no float underflow)
            cur := CASE WHEN t < r.period THEN 0 ELSE floor(t / r.period)::BIGINT END;
            want := hmac(convert_to(p_code, 'UTF8'), mac_key, 'sha256');
            s := greatest(0, cur - r.drift);
            WHILE s <= cur + r.drift LOOP
                hit := hmac(convert_to(jctotp_hotp(u.totp_key, s, r.digits), 'UTF8'),
                            mac_key, 'sha256') = want;
                IF hit AND step IS NULL THEN
                    step := s;
                END IF;
                s := s + 1;
            END LOOP;
        END IF;
{_ACCEPT_STEP}        ELSIF p_recovery IS NOT NULL AND p_consume THEN
            want := hmac(convert_to(p_recovery, 'UTF8'), mac_key, 'sha256');
            FOR h IN SELECT rc.code_hash FROM recovery_codes rc
                      WHERE rc."user" = p_name AND rc.used_at IS NULL LOOP
                hit := hmac(convert_to(h, 'UTF8'), mac_key, 'sha256') = want;
                IF hit AND used IS NULL THEN
                    used := h;
                END IF;
            END LOOP;
            IF used IS NOT NULL THEN   -- (the stored value: no compare of the caller's)
                UPDATE recovery_codes SET used_at = t
                 WHERE "user" = p_name AND code_hash = used AND used_at IS NULL;
                IF FOUND THEN
                    outcome := 'recovery';
                END IF;
            END IF;
        END IF;
{_COUNT_GUESS}    END $$;
"""

PUT_FUNCTION = """
    -- A new key (NULL: none): a fresh random id in users.totp_secret, the key beside it.
    CREATE FUNCTION jctotp_put_key(p_name TEXT, p_key BYTEA) RETURNS BYTEA
        LANGUAGE plpgsql SECURITY DEFINER AS $$
    DECLARE kid BYTEA := CASE WHEN p_key IS NULL THEN NULL ELSE gen_random_bytes(16) END;
    BEGIN
        IF p_key IS NOT NULL AND length(p_key) < 10 THEN
            RAISE EXCEPTION 'a TOTP key of at least 80 bits';
        END IF;
        INSERT INTO jctotp_secrets AS k (name, totp_id, totp_key) VALUES (p_name, kid, p_key)
            ON CONFLICT (name) DO UPDATE SET totp_id = kid, totp_key = p_key,
                                             guard_count = 0, guard_start = NULL;
        UPDATE users SET totp_secret = kid WHERE name = p_name;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no user %', p_name;
        END IF;
        RETURN kid;
    END $$;
"""

# users.totp_secret set to anything but the key's id (an MFA reset sets NULL through
# the admin verbs' plain UPDATE): the key goes, in the same transaction.
KEY_ID_TRIGGER = """
    CREATE FUNCTION jctotp_key_id_changed() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER AS $$
    BEGIN
        UPDATE jctotp_secrets SET totp_id = NULL, totp_key = NULL, sealed = NULL
         WHERE name = NEW.name AND totp_id IS DISTINCT FROM NEW.totp_secret;
        RETURN NULL;
    END $$;
    CREATE TRIGGER users_key_id_changed AFTER UPDATE OF totp_secret ON users FOR EACH ROW
        WHEN (OLD.totp_secret IS DISTINCT FROM NEW.totp_secret)
        EXECUTE FUNCTION jctotp_key_id_changed();
"""

BREAK_GLASS_FUNCTION = """
    -- The owner could read the table itself: it gets every key (the shared-role fleets
    -- of before issue 22); a host role only those of jctotp_break_glass's names.
    CREATE FUNCTION jctotp_break_glass_keys() RETURNS TABLE (name TEXT, totp_key BYTEA)
        LANGUAGE sql STABLE SECURITY DEFINER AS $$
        SELECT k.name, k.totp_key FROM jctotp_secrets k
          JOIN users u ON u.name = k.name AND u.totp_secret = k.totp_id
         WHERE k.totp_key IS NOT NULL
           AND (k.name IN (SELECT b.name FROM jctotp_break_glass b)
                OR pg_has_role(session_user, (SELECT c.relowner FROM pg_class c
                                              WHERE c.oid = 'jctotp_secrets'::regclass),
                               'USAGE'))
    $$;
"""

# What the hosts' group role gets (pg_hosts.grant adds it to its GRANTS): recovery
# codes without their hashes, the functions, the rule (not secret: hosts show it).
GRANTS = f"""
    REVOKE ALL ON recovery_codes FROM {{group}};
    GRANT SELECT ("user", used_at), INSERT, DELETE ON recovery_codes TO {{group}};
    GRANT SELECT ON jctotp_totp_rule TO {{group}};
    GRANT EXECUTE ON FUNCTION {CHECK_SIGNATURE}, {PUT_SIGNATURE},
        {BREAK_GLASS_SIGNATURE} TO {{group}};
"""


def migration(rule: Totp = RULE) -> str:
    """Migration 5 (postgres.MIGRATIONS), its rule from core/totp.py's defaults. The
    keys sealed with the fleet key (before) move to `sealed`, out of the hosts' reach,
    and are unsealed by the first owner connection that has the key (unseal_legacy);
    unconfirmed (pending) keys are dropped: their users see a new one."""
    return f"""
    CREATE EXTENSION IF NOT EXISTS pgcrypto;
    CREATE TABLE jctotp_totp_rule (
        id             INTEGER PRIMARY KEY CHECK (id = 1),
        digits         INTEGER NOT NULL CHECK (digits BETWEEN 6 AND 8),
        period         INTEGER NOT NULL CHECK (period > 0),
        drift          INTEGER NOT NULL CHECK (drift BETWEEN 0 AND 10),
        algorithm      TEXT NOT NULL CHECK (algorithm = 'sha1'),
        guard_limit    INTEGER NOT NULL CHECK (guard_limit > 0),
        guard_interval INTEGER NOT NULL CHECK (guard_interval > 0)
    );
    INSERT INTO jctotp_totp_rule VALUES (1, {rule.digits:d}, {rule.period:d},
                                         {rule.window:d}, 'sha1', {GUARD_LIMIT:d},
                                         {GUARD_INTERVAL:d});
    CREATE TABLE jctotp_secrets (
        name        TEXT PRIMARY KEY REFERENCES users(name) ON DELETE CASCADE
                                                           ON UPDATE CASCADE,
        totp_id     BYTEA,     -- = users.totp_secret while this key is the user's
        totp_key    BYTEA,     -- the raw key (RFC 4226's K)
        sealed      BYTEA,     -- a key of before, sealed with the fleet key
        guard_count INTEGER NOT NULL DEFAULT 0,
        guard_start DOUBLE PRECISION
    );
    CREATE TABLE jctotp_break_glass (name TEXT PRIMARY KEY);
    REVOKE ALL ON jctotp_totp_rule, jctotp_secrets, jctotp_break_glass FROM PUBLIC;
    INSERT INTO jctotp_secrets (name, totp_id, sealed)
        SELECT name, gen_random_bytes(16), totp_secret FROM users
         WHERE totp_secret IS NOT NULL;
    UPDATE users u SET totp_secret = k.totp_id FROM jctotp_secrets k WHERE k.name = u.name;
    UPDATE users SET pending_secret = NULL WHERE pending_secret IS NOT NULL;
    {HOTP_FUNCTION}
    {CHECK_FUNCTION}
    {PUT_FUNCTION}
    {KEY_ID_TRIGGER}
    {BREAK_GLASS_FUNCTION}
    REVOKE EXECUTE ON FUNCTION {CHECK_SIGNATURE}, {PUT_SIGNATURE}, {BREAK_GLASS_SIGNATURE},
        {KEY_ID_SIGNATURE} FROM PUBLIC;
    {pin_search_path(CHECK_SIGNATURE)}
    {pin_search_path(PUT_SIGNATURE)}
    {pin_search_path(BREAK_GLASS_SIGNATURE)}
    {pin_search_path(KEY_ID_SIGNATURE)}
    -- a fleet with host roles already: theirs now, not at the next `fleet init`
    DO $$ DECLARE grp TEXT := 'jctotp_hosts_' || (SELECT value FROM jctotp_meta
                                                   WHERE key = 'fleet_id');
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = grp) THEN
            EXECUTE replace({_literal(GRANTS)}, '{{group}}', quote_ident(grp));
        END IF;
    END $$;
    """


# Migration 7 (postgres.MIGRATIONS), issue 22's stolen-host gaps: the code check on
# the database's clock and compared in constant time (CHECK_FUNCTION_V7), and
# `jctotp fleet break-glass` wakes the hosts' syncs as a user's change does (the
# trigger of migration 1's function: a NOTIFY and the change counter, for the hosts
# behind PgBouncer), so their copies drop a member within seconds.
MIGRATION_7 = f"""
    ALTER TABLE jctotp_totp_rule ADD COLUMN clock TEXT NOT NULL DEFAULT 'database'
        CHECK (clock IN ('database', 'host'));
    {CHECK_FUNCTION_V7}
    {pin_search_path(CHECK_SIGNATURE)}
    CREATE TRIGGER break_glass_changed
        AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON jctotp_break_glass
        FOR EACH STATEMENT EXECUTE FUNCTION jctotp_users_changed();
"""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def grant(conn: psycopg.Connection[Any], group: str) -> None:
    conn.execute(sql.SQL(GRANTS).format(group=sql.Identifier(group)))


def set_rule(conn: psycopg.Connection[Any], totp: Totp) -> None:
    """`fleet init --admin-database`: the config's totp_digits/period/window."""
    conn.execute("UPDATE jctotp_totp_rule SET digits = %s, period = %s, drift = %s "
                 "WHERE id = 1", (totp.digits, totp.period, totp.window))


def set_break_glass(conn: psycopg.Connection[Any], names: list[str]) -> None:
    """`jctotp fleet break-glass`: exactly these users' keys reach the hosts' copies."""
    conn.execute("DELETE FROM jctotp_break_glass")
    if names:
        conn.cursor().executemany("INSERT INTO jctotp_break_glass VALUES (%s)",
                                  [(n,) for n in names])


def unseal_legacy(conn: psycopg.Connection[Any],
                  unseal: Callable[[bytes, str], bytes]) -> int:
    """Keys of before migration 5, sealed with the fleet key, made usable by the
    database (as the owner, who holds the key: `fleet init`); returns how many."""
    if not conn.execute("SELECT has_table_privilege('jctotp_secrets', 'UPDATE')"
                        ).fetchone()[0]:   # type: ignore[index]
        return 0
    rows = conn.execute("SELECT name, sealed FROM jctotp_secrets WHERE sealed IS NOT NULL "
                        "FOR UPDATE").fetchall()
    for name, sealed in rows:
        conn.execute("UPDATE jctotp_secrets SET totp_key = %s, sealed = NULL WHERE name = %s",
                     (unseal(bytes(sealed), name), name))
    return len(rows)

