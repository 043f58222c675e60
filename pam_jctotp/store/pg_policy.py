"""The fleet's policy in the database (issue 21): SQL for postgres.py, kept apart from it.

`fleet_policy` holds one row per policy key `jctotp policy set` stored (the value as
JSON, validated by the daemon with config.py's rules before it is written, and again
by every host that reads it). A change bumps the change counter and notifies
`jctotp_users` (the users trigger's function, migration 2), so every host's fleet sync
reads it within seconds, through PgBouncer too.

Hosts (their roles, issue 22) may read it, and change it only through
jctotp_policy_set(): SECURITY DEFINER, so `set_by` carries the host the database
knows the session as (its entry in fleet_hosts), never a name the caller claims.
A host that may unlock and reset any user may set policy too: the same trust, from
the same CLI (as root: the admin verb of the control socket), audited as every
admin verb is.
"""

from __future__ import annotations

from .pg_audit import pin_search_path

# Migration 5 (see postgres.MIGRATIONS).
MIGRATION = f"""
    CREATE TABLE fleet_policy (
        key    TEXT PRIMARY KEY CHECK (key ~ '^[a-z_]{{1,40}}$'),
        value  JSONB NOT NULL,
        set_at DOUBLE PRECISION NOT NULL,
        set_by TEXT NOT NULL
    );
    REVOKE ALL ON fleet_policy FROM PUBLIC;
    CREATE TRIGGER fleet_policy_changed AFTER INSERT OR UPDATE OR DELETE ON fleet_policy
        FOR EACH STATEMENT EXECUTE FUNCTION jctotp_users_changed();
    -- actor: "root@HOST" (HOST replaced by the host the session's role belongs to).
    -- value NULL: the key leaves the fleet policy (every host's file applies again).
    -- Returns the value it replaced (NULL: none).
    CREATE FUNCTION jctotp_policy_set(k TEXT, v JSONB, actor TEXT) RETURNS JSONB
        LANGUAGE plpgsql SECURITY DEFINER AS $$
    DECLARE prev JSONB; who TEXT;
    BEGIN
        SELECT value INTO prev FROM fleet_policy WHERE key = k FOR UPDATE;
        SELECT h.name INTO who FROM fleet_hosts h
         WHERE h.role_name = session_user AND h.removed_at IS NULL;
        -- "root@host": a host's own role names the host (never the caller's claim)
        who := CASE WHEN who IS NULL THEN actor ELSE split_part(actor, '@', 1) || '@' || who END;
        IF v IS NULL THEN
            DELETE FROM fleet_policy WHERE key = k;
        ELSE
            INSERT INTO fleet_policy VALUES (k, v, extract(epoch FROM clock_timestamp()), who)
                ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,
                    set_at = EXCLUDED.set_at, set_by = EXCLUDED.set_by;
        END IF;
        RETURN prev;
    END $$;
    {pin_search_path("jctotp_policy_set(TEXT, JSONB, TEXT)")}
    REVOKE EXECUTE ON FUNCTION jctotp_policy_set(TEXT, JSONB, TEXT) FROM PUBLIC;
"""

# Added to pg_hosts.GRANTS: read the policy, change it only through the function.
GRANTS = """
    GRANT SELECT ON fleet_policy TO {group};
    GRANT EXECUTE ON FUNCTION jctotp_policy_set(TEXT, JSONB, TEXT) TO {group};
"""

ROWS = "SELECT key, value, set_at, set_by FROM fleet_policy ORDER BY key"
SET = "SELECT jctotp_policy_set(%s, %s, %s)"
