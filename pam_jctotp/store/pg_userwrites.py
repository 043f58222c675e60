"""Every write a host role makes to a user goes through a function (issue 22): a stolen
host cannot re-key a user, then log in elsewhere with their password.

With `UPDATE users` a host could drop a user's key (`SET totp_secret = NULL`), put
its own with jctotp_put_key, lower the replay watermark, zero a lock, or add a
recovery code of its own making (it has the fleet key the hashes are keyed with).
So host roles keep only SELECT on `users` (and on recovery codes without hashes),
and write through these SECURITY DEFINER functions, owned by the schema's owner:

- the login's counters: jctotp_reserve_attempt, _release_attempt, _lock_if_exhausted,
  _reset_failures, _expire_lock, _accept_step (the same single statements as
  before; the guess ceiling of jctotp_check_code binds whatever a host passes);
- jctotp_verify_code: jctotp_check_code, and a code it accepted (consumed) is
  recorded as a proof: this user, through this role (session_user), at the
  database's time (jctotp_key_proofs, which no host role can touch);
- jctotp_set_key: a new TOTP key. For a user with no key, only while they may enroll
  (not after their enrollment period ended); replacing an ACTIVE key only with a
  proof younger than PROOF_TTL made through the same role: the user typed their
  current code (or a recovery code) into this host's self-reset (`jctotp reset`,
  the portal). The check and the write are two statements because the old key must
  keep working until the new one is confirmed (DESIGN: leaving half-way never locks
  anyone out), but the database links them: a host that never saw a right code of
  the user cannot replace their key;
- jctotp_set_recovery_codes / _clear_recovery_codes: with no active key, with a key
  put in this same transaction (enrollment), or with a proof (as above);
- jctotp_add_user, jctotp_update_user (plain columns: a key only as jctotp_set_key
  made it, the replay watermark lowered only with a key of this transaction or none),
  jctotp_unlock, jctotp_delete_user.

The admin verbs that weaken a user (MFA reset or disable, a new enrollment period for
an expired one, unlock, remove, a higher attempt limit or no more admin flag) append
their own audit row in the same transaction (host: the role's, by the audit trigger;
the admin: the caller's; `via: database`),
and are refused to host roles while the fleet policy says `host_admin_verbs: false`
(only the schema's owner may then do them). No host role may change that policy key
once it is false. The owner (and a fleet of one shared role, from before issue 22)
runs the same functions unrestricted and unaudited here: its daemon audits as before.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from .pg_audit import pin_search_path

PROOF_TTL = 900   # seconds from a proved code to the new key (the enrollment's screens)

# Columns jctotp_update_user sets for a host role (the counters and the lock: only
# through the login's functions and jctotp_unlock).
HOST_COLUMNS = ("is_admin", "password_hash", "mfa_required", "enroll_deadline",
                "totp_secret", "pending_secret", "last_step", "max_attempts", "enrolled_at",
                "email", "enroll_now")

SIGNATURES = {
    "add": "jctotp_add_user(TEXT, BOOLEAN, TEXT, DOUBLE PRECISION)",
    "update": "jctotp_update_user(TEXT, JSONB, TEXT)",
    "delete": "jctotp_delete_user(TEXT, TEXT)",
    "unlock": "jctotp_unlock(TEXT, TEXT)",
    "expire": "jctotp_expire_lock(TEXT, DOUBLE PRECISION, INTEGER)",
    "reserve": "jctotp_reserve_attempt(TEXT, DOUBLE PRECISION, DOUBLE PRECISION, INTEGER)",
    "release": "jctotp_release_attempt(TEXT)",
    "lock": "jctotp_lock_if_exhausted(TEXT, DOUBLE PRECISION, INTEGER, TEXT)",
    "reset": "jctotp_reset_failures(TEXT)",
    "accept": "jctotp_accept_step(TEXT, BIGINT, BOOLEAN)",
    "verify": "jctotp_verify_code(TEXT, TEXT, TEXT, DOUBLE PRECISION, BOOLEAN, BOOLEAN)",
    "key": "jctotp_set_key(TEXT, BYTEA)",
    "codes": "jctotp_set_recovery_codes(TEXT, TEXT[])",
    "clear": "jctotp_clear_recovery_codes(TEXT)",
}
# helpers the functions above call (no host may run them itself)
HELPERS = ("jctotp_is_owner()", "jctotp_session_host()", "jctotp_proved(TEXT)",
           "jctotp_step_ceiling()",
           "jctotp_weaken(TEXT, TEXT, TEXT, TEXT, JSONB)", "jctotp_policy_guard()")

_FUNCTIONS = f"""
    -- the schema's owner (a member of it, a superuser): as before issue 22
    CREATE FUNCTION jctotp_is_owner() RETURNS BOOLEAN LANGUAGE sql STABLE AS $$
        SELECT pg_has_role(session_user, (SELECT c.relowner FROM pg_class c
                                          WHERE c.oid = 'users'::regclass), 'USAGE')
    $$;
    CREATE FUNCTION jctotp_session_host() RETURNS TEXT LANGUAGE sql STABLE
        SECURITY DEFINER AS $$
        SELECT name FROM fleet_hosts WHERE role_name = session_user
    $$;
    -- a code of this user accepted through this role, lately; or their key put in
    -- this very transaction (the enrollment that goes on to its recovery codes)
    CREATE FUNCTION jctotp_proved(p_name TEXT) RETURNS BOOLEAN LANGUAGE sql STABLE AS $$
        SELECT EXISTS (SELECT 1 FROM jctotp_key_proofs p WHERE p.name = p_name
                          AND ((p.proved_by = session_user
                                AND p.proved_at > extract(epoch FROM clock_timestamp())
                                                  - {PROOF_TTL:d})
                               OR p.keyed_xid = txid_current_if_assigned()))
    $$;
    -- The highest replay watermark a host may write: the database clock's step plus
    -- the window (migration 7's clock); a stolen host writing a far-future step would
    -- make every later code a "replay", fleet-wide. NULL: no ceiling (the owner, or a
    -- test fleet whose owner set clock 'host').
    CREATE FUNCTION jctotp_step_ceiling() RETURNS BIGINT LANGUAGE sql STABLE AS $$
        SELECT CASE WHEN jctotp_is_owner() OR r.clock = 'host' THEN NULL
                    ELSE floor(extract(epoch FROM clock_timestamp()) / r.period)::BIGINT
                         + r.drift END
          FROM jctotp_totp_rule r WHERE r.id = 1
    $$;
    -- An admin verb that weakens a user, from a host role: refused while the fleet
    -- policy says host_admin_verbs: false, else audited in this transaction.
    CREATE FUNCTION jctotp_weaken(p_what TEXT, p_name TEXT, p_actor TEXT, p_event TEXT,
                                  p_fields JSONB) RETURNS VOID
        LANGUAGE plpgsql SECURITY DEFINER AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM fleet_policy WHERE key = 'host_admin_verbs'
                                                AND value = 'false'::jsonb) THEN
            RAISE EXCEPTION 'refused by the fleet policy host_admin_verbs: false: host % may '
                'not % % (only the schema''s owner may: the same jctotp command with '
                '--admin-database URI)',
                coalesce(jctotp_session_host(), session_user), p_what, p_name
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        INSERT INTO audit_events (ts, host_name, event, "user", fields)
             VALUES (extract(epoch FROM clock_timestamp()),
                     coalesce(jctotp_session_host(), session_user), p_event, p_name,
                     jsonb_strip_nulls(p_fields) || jsonb_build_object(
                         'actor', p_actor, 'via', 'database'));
    END $$;
    -- No host role turns host_admin_verbs back on (or drops it) once it is false.
    CREATE FUNCTION jctotp_policy_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.key = 'host_admin_verbs' AND OLD.value = 'false'::jsonb
           AND (TG_OP = 'DELETE' OR NEW.value IS DISTINCT FROM OLD.value)
           AND NOT jctotp_is_owner() THEN
            RAISE EXCEPTION 'refused: only the schema''s owner may change the fleet policy '
                'host_admin_verbs once it is false' USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END $$;
    CREATE TRIGGER fleet_policy_guard BEFORE UPDATE OR DELETE ON fleet_policy
        FOR EACH ROW EXECUTE FUNCTION jctotp_policy_guard();

    -- --- the login's counters (store/postgres/users.py's statements, unchanged) ----
    CREATE FUNCTION jctotp_reserve_attempt(p_name TEXT, p_now DOUBLE PRECISION,
                                           p_start DOUBLE PRECISION, p_limit INTEGER)
        RETURNS INTEGER LANGUAGE sql SECURITY DEFINER AS $$
        UPDATE users SET
          failed_count = CASE WHEN fail_window_start IS NULL OR fail_window_start <= p_start
                              THEN 1 ELSE failed_count + 1 END,
          fail_window_start = CASE WHEN fail_window_start IS NULL
                                     OR fail_window_start <= p_start
                                   THEN p_now ELSE fail_window_start END
        WHERE name = p_name AND locked_at IS NULL
          AND (fail_window_start IS NULL OR fail_window_start <= p_start
               OR failed_count < p_limit)
        RETURNING failed_count
    $$;
    CREATE FUNCTION jctotp_release_attempt(p_name TEXT) RETURNS VOID
        LANGUAGE sql SECURITY DEFINER AS $$
        UPDATE users SET failed_count = failed_count - 1
         WHERE name = p_name AND failed_count > 0 AND locked_at IS NULL
    $$;
    CREATE FUNCTION jctotp_lock_if_exhausted(p_name TEXT, p_now DOUBLE PRECISION,
                                             p_limit INTEGER, p_reason TEXT)
        RETURNS BOOLEAN LANGUAGE sql SECURITY DEFINER AS $$
        WITH locked AS (UPDATE users SET locked_at = p_now, lock_reason = p_reason
                         WHERE name = p_name AND locked_at IS NULL
                           AND failed_count >= p_limit RETURNING 1)
        SELECT EXISTS (SELECT 1 FROM locked)
    $$;
    CREATE FUNCTION jctotp_reset_failures(p_name TEXT) RETURNS VOID
        LANGUAGE sql SECURITY DEFINER AS $$
        UPDATE users SET failed_count = 0, fail_window_start = NULL WHERE name = p_name
           AND (failed_count <> 0 OR fail_window_start IS NOT NULL)
    $$;
    CREATE FUNCTION jctotp_expire_lock(p_name TEXT, p_now DOUBLE PRECISION,
                                       p_unlock_after INTEGER)
        RETURNS BOOLEAN LANGUAGE sql SECURITY DEFINER AS $$
        WITH expired AS (UPDATE users SET locked_at = NULL, lock_reason = NULL,
                                failed_count = 0, fail_window_start = NULL
                          WHERE name = p_name AND locked_at IS NOT NULL
                            AND p_unlock_after > 0 AND locked_at <= p_now - p_unlock_after
                          RETURNING 1)
        SELECT EXISTS (SELECT 1 FROM expired)
    $$;
    CREATE FUNCTION jctotp_accept_step(p_name TEXT, p_step BIGINT, p_reset BOOLEAN)
        RETURNS BOOLEAN LANGUAGE sql SECURITY DEFINER AS $$
        WITH accepted AS (
            UPDATE users SET last_step = p_step,
                   failed_count = CASE WHEN p_reset THEN 0 ELSE failed_count END,
                   fail_window_start = CASE WHEN p_reset THEN NULL ELSE fail_window_start END
             WHERE name = p_name AND last_step < p_step
               AND p_step <= coalesce(jctotp_step_ceiling(), p_step) RETURNING 1)
        SELECT EXISTS (SELECT 1 FROM accepted)
    $$;

    -- --- codes and keys -------------------------------------------------------------
    CREATE FUNCTION jctotp_verify_code(p_name TEXT, p_code TEXT, p_recovery TEXT,
                                       p_now DOUBLE PRECISION, p_consume BOOLEAN,
                                       p_reset BOOLEAN, OUT outcome TEXT, OUT step BIGINT)
        LANGUAGE plpgsql SECURITY DEFINER AS $$
    BEGIN
        SELECT c.outcome, c.step INTO outcome, step
          FROM jctotp_check_code(p_name, p_code, p_recovery, p_now, p_consume, p_reset) c;
        IF p_consume AND outcome IN ('totp', 'recovery') THEN
            INSERT INTO jctotp_key_proofs AS p (name, proved_at, proved_by)
                 VALUES (p_name, extract(epoch FROM clock_timestamp()), session_user)
                ON CONFLICT (name) DO UPDATE SET proved_at = EXCLUDED.proved_at,
                                                 proved_by = EXCLUDED.proved_by;
        END IF;
    END $$;
    CREATE FUNCTION jctotp_set_key(p_name TEXT, p_key BYTEA) RETURNS BYTEA
        LANGUAGE plpgsql SECURITY DEFINER AS $$
    DECLARE u users; kid BYTEA;
    BEGIN
        SELECT * INTO u FROM users WHERE name = p_name FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no user %', p_name;
        END IF;
        IF NOT jctotp_is_owner() THEN
            IF u.totp_secret IS NOT NULL AND NOT jctotp_proved(p_name) THEN
                RAISE EXCEPTION 'a new TOTP key for % (enrolled) needs their current code, '
                    'checked through this host in the last % s; an admin resets MFA '
                    'instead (jctotp mfa reset)', p_name, {PROOF_TTL:d}
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            IF u.totp_secret IS NULL AND u.mfa_required = 1 AND u.enroll_now = 0
               AND coalesce(u.enroll_deadline, 0) <= extract(epoch FROM clock_timestamp()) THEN
                RAISE EXCEPTION 'the enrollment period of % is over: an admin renews it '
                    'first (jctotp unlock)', p_name USING ERRCODE = 'insufficient_privilege';
            END IF;
            IF p_key IS NULL AND u.totp_secret IS NOT NULL THEN
                RAISE EXCEPTION 'a host removes a key only by an MFA reset or disable'
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        END IF;
        kid := jctotp_put_key(p_name, p_key);
        INSERT INTO jctotp_key_proofs AS p (name, keyed_xid) VALUES (p_name, txid_current())
            ON CONFLICT (name) DO UPDATE SET keyed_xid = EXCLUDED.keyed_xid;
        RETURN kid;
    END $$;
    CREATE FUNCTION jctotp_set_recovery_codes(p_name TEXT, p_hashes TEXT[]) RETURNS VOID
        LANGUAGE plpgsql SECURITY DEFINER AS $$
    BEGIN
        PERFORM jctotp_clear_recovery_codes(p_name);
        INSERT INTO recovery_codes ("user", code_hash)
             SELECT p_name, h FROM unnest(p_hashes) h;
    END $$;
    CREATE FUNCTION jctotp_clear_recovery_codes(p_name TEXT) RETURNS VOID
        LANGUAGE plpgsql SECURITY DEFINER AS $$
    BEGIN
        IF NOT jctotp_is_owner() AND EXISTS (
                SELECT 1 FROM users WHERE name = p_name AND totp_secret IS NOT NULL)
           AND NOT jctotp_proved(p_name) THEN
            RAISE EXCEPTION 'new recovery codes for % (enrolled) need their current code, '
                'checked through this host in the last % s', p_name, {PROOF_TTL:d}
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        DELETE FROM recovery_codes WHERE "user" = p_name;
    END $$;

    -- --- the records ---------------------------------------------------------------
    CREATE FUNCTION jctotp_add_user(p_name TEXT, p_admin BOOLEAN, p_hash TEXT,
                                    p_now DOUBLE PRECISION) RETURNS VOID
        LANGUAGE sql SECURITY DEFINER AS $$
        INSERT INTO users (name, is_admin, password_hash, created_at)
             VALUES (p_name, p_admin::int, p_hash, p_now)
    $$;
    -- Returns NULL: no such user; '': done; else the event it audited (a host's
    -- admin verb that weakens the user: see jctotp_weaken).
    CREATE FUNCTION jctotp_update_user(p_name TEXT, p_values JSONB, p_actor TEXT)
        RETURNS TEXT LANGUAGE plpgsql SECURITY DEFINER AS $$
    DECLARE o users; n users; bad TEXT; event TEXT; now DOUBLE PRECISION;
            expired BOOLEAN;
    BEGIN
        SELECT * INTO o FROM users WHERE name = p_name FOR UPDATE;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        n := jsonb_populate_record(o, p_values);
        IF NOT jctotp_is_owner() THEN
            SELECT string_agg(k, ', ') INTO bad FROM jsonb_object_keys(p_values) k
             WHERE k <> ALL (ARRAY[{", ".join(f"'{c}'" for c in HOST_COLUMNS)}]);
            IF bad IS NOT NULL THEN
                RAISE EXCEPTION 'a host role sets % of a user only through the login''s '
                    'functions', bad USING ERRCODE = 'insufficient_privilege';
            END IF;
            IF n.totp_secret IS NOT NULL AND n.totp_secret IS DISTINCT FROM o.totp_secret THEN
                RAISE EXCEPTION 'a TOTP key only through jctotp_set_key'
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            IF n.last_step < o.last_step AND n.totp_secret IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM jctotp_key_proofs p WHERE p.name = p_name
                                  AND p.keyed_xid = txid_current_if_assigned()) THEN
                RAISE EXCEPTION 'the replay watermark of % only moves on', p_name
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            IF n.last_step > o.last_step AND n.last_step > jctotp_step_ceiling() THEN
                RAISE EXCEPTION 'the replay watermark of % only up to the database clock''s '
                    'step', p_name USING ERRCODE = 'insufficient_privilege';
            END IF;
            now := extract(epoch FROM clock_timestamp());
            expired := o.totp_secret IS NULL AND o.mfa_required = 1 AND o.enroll_now = 0
                       AND coalesce(o.enroll_deadline, 0) <= now;
            IF o.totp_secret IS NOT NULL AND n.totp_secret IS NULL THEN
                event := CASE WHEN n.mfa_required = 1 THEN 'mfa_reset' ELSE 'mfa_disabled' END;
            ELSIF o.mfa_required = 1 AND n.mfa_required = 0 THEN
                event := 'mfa_disabled';
            ELSIF expired AND (n.enroll_now = 1 OR n.enroll_deadline > now) THEN
                -- a new enrollment period: the next login may enroll a key
                event := CASE WHEN p_values ? 'totp_secret' THEN 'mfa_reset'
                              WHEN p_values ? 'mfa_required' THEN 'mfa_enabled'
                              ELSE 'unlocked' END;
            ELSIF (o.is_admin = 1 AND n.is_admin = 0)
                  OR (n.max_attempts IS DISTINCT FROM o.max_attempts
                      AND NOT coalesce(n.max_attempts < o.max_attempts, FALSE)) THEN
                -- more guesses before the lock, and a higher guess ceiling (pg_codecheck)
                event := 'user_changed';
            END IF;
            IF event = 'user_changed' THEN
                PERFORM jctotp_weaken('raise the attempt limit (or drop the admin flag) of',
                                      p_name, p_actor, event, jsonb_build_object(
                    'max_attempts', n.max_attempts, 'admin', n.is_admin = 1));
            ELSIF event IS NOT NULL THEN
                PERFORM jctotp_weaken(CASE event WHEN 'mfa_reset' THEN 'reset MFA of'
                                                 WHEN 'mfa_disabled' THEN 'disable MFA of'
                                                 ELSE 'renew the enrollment period of' END,
                                      p_name, p_actor, event, jsonb_build_object(
                    'enroll_now', CASE WHEN n.enroll_now = 1 AND n.mfa_required = 1
                                       THEN TRUE END,
                    'enrollment_days', CASE WHEN n.enroll_now = 0 AND n.mfa_required = 1
                        THEN ceil((n.enroll_deadline - now) / 86400) END));
            END IF;
        END IF;
        EXECUTE 'UPDATE users SET ' || (SELECT string_agg(format('%I = ($1).%I', k, k), ', ')
                                         FROM jsonb_object_keys(p_values) k)
             || ' WHERE name = $2' USING n, p_name;
        RETURN coalesce(event, '');
    END $$;
    CREATE FUNCTION jctotp_unlock(p_name TEXT, p_actor TEXT) RETURNS TEXT
        LANGUAGE plpgsql SECURITY DEFINER AS $$
    DECLARE o users; event TEXT;
    BEGIN
        SELECT * INTO o FROM users WHERE name = p_name FOR UPDATE;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        IF NOT jctotp_is_owner() AND (o.locked_at IS NOT NULL OR o.failed_count <> 0) THEN
            PERFORM jctotp_weaken('unlock', p_name, p_actor, 'unlocked', '{{}}');
            event := 'unlocked';
        END IF;
        UPDATE users SET locked_at = NULL, lock_reason = NULL, failed_count = 0,
               fail_window_start = NULL WHERE name = p_name;
        RETURN coalesce(event, '');
    END $$;
    CREATE FUNCTION jctotp_delete_user(p_name TEXT, p_actor TEXT) RETURNS TEXT
        LANGUAGE plpgsql SECURITY DEFINER AS $$
    DECLARE event TEXT;
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM users WHERE name = p_name FOR UPDATE) THEN
            RETURN NULL;
        END IF;
        IF NOT jctotp_is_owner() THEN
            PERFORM jctotp_weaken('remove', p_name, p_actor, 'user_removed', '{{}}');
            event := 'user_removed';
        END IF;
        DELETE FROM users WHERE name = p_name;
        RETURN coalesce(event, '');
    END $$;
"""

# What the hosts' group role gets, after pg_hosts.GRANTS and pg_codecheck.GRANTS
# (pg_hosts.grant): the writes above instead of the tables' own.
GRANTS = f"""
    REVOKE INSERT, UPDATE, DELETE ON users FROM {{group}};
    REVOKE INSERT, DELETE ON recovery_codes FROM {{group}};
    REVOKE EXECUTE ON FUNCTION jctotp_put_key(TEXT, BYTEA) FROM {{group}};
    GRANT EXECUTE ON FUNCTION {", ".join(SIGNATURES.values())} TO {{group}};
"""

MIGRATION = f"""
    CREATE TABLE jctotp_key_proofs (
        name      TEXT PRIMARY KEY REFERENCES users(name) ON DELETE CASCADE
                                                         ON UPDATE CASCADE,
        proved_at DOUBLE PRECISION,   -- the database's time of the last code accepted
        proved_by TEXT,               -- ... through this role
        keyed_xid BIGINT              -- the transaction that last put this user's key
    );
    REVOKE ALL ON jctotp_key_proofs FROM PUBLIC;
    {_FUNCTIONS}
    REVOKE EXECUTE ON FUNCTION {", ".join([*SIGNATURES.values(), *HELPERS])} FROM PUBLIC;
    {"".join(pin_search_path(f) for f in [*SIGNATURES.values(), *HELPERS])}
    -- a fleet with host roles already: theirs now, not at the next `fleet init`
    DO $$ DECLARE grp TEXT := 'jctotp_hosts_' || (SELECT value FROM jctotp_meta
                                                   WHERE key = 'fleet_id');
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = grp) THEN
            EXECUTE replace({"'" + GRANTS.replace("'", "''") + "'"}, '{{group}}',
                            quote_ident(grp));
        END IF;
    END $$;
"""


def grant(conn: psycopg.Connection[Any], group: str) -> None:
    conn.execute(sql.SQL(GRANTS).format(group=sql.Identifier(group)))
