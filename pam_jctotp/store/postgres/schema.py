"""The fleet schema (part of store/postgres/): MIGRATIONS, the migration under an
advisory lock, jctotp_meta and the key check."""

from __future__ import annotations

import hmac
from functools import partial
from typing import Any

import psycopg

from ...errors import StoreError
from .. import pg_audit, pg_codecheck, pg_hosts, pg_policy, pg_userwrites
from .pool import LONG_DEADLINE, Connections

SCHEMA_LOCK = 0x6a63746f  # advisory lock id ("jcto"): one host migrates at a time

# Each entry upgrades the schema by one version (jctotp_meta 'schema_version').
# Column types mirror sqlite.py (0/1 integers for flags, float seconds for times),
# so the one core writes the same values to both.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE users (
        name              TEXT PRIMARY KEY,
        is_admin          INTEGER NOT NULL DEFAULT 0,
        password_hash     TEXT,
        mfa_required      INTEGER NOT NULL DEFAULT 0,
        enroll_deadline   DOUBLE PRECISION,
        totp_secret       BYTEA,
        pending_secret    BYTEA,
        last_step         BIGINT NOT NULL DEFAULT -1,
        failed_count      INTEGER NOT NULL DEFAULT 0,
        fail_window_start DOUBLE PRECISION,
        locked_at         DOUBLE PRECISION,
        lock_reason       TEXT,
        max_attempts      INTEGER,
        created_at        DOUBLE PRECISION NOT NULL,
        enrolled_at       DOUBLE PRECISION,
        email             TEXT,
        enroll_now        INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE recovery_codes (
        "user"    TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        code_hash TEXT NOT NULL,
        used_at   DOUBLE PRECISION,
        PRIMARY KEY ("user", code_hash)
    );
    CREATE TABLE audit_events (
        id        BIGSERIAL PRIMARY KEY,
        ts        DOUBLE PRECISION NOT NULL,
        host_name TEXT NOT NULL,
        event     TEXT NOT NULL,
        "user"    TEXT,
        fields    JSONB NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_events_ts ON audit_events (ts);
    -- Every host keeps host-local copies current (lock markers, Linux accounts,
    -- break-glass secrets): a NOTIFY when a user comes, goes, or changes lock or keys.
    CREATE FUNCTION jctotp_users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('jctotp_users', '');
        RETURN NULL;
    END $$;
    CREATE TRIGGER users_added_or_removed AFTER INSERT OR DELETE ON users
        FOR EACH STATEMENT EXECUTE FUNCTION jctotp_users_changed();
    CREATE TRIGGER users_lock_or_keys_changed AFTER UPDATE ON users FOR EACH ROW
        WHEN (OLD.locked_at IS DISTINCT FROM NEW.locked_at
              OR OLD.totp_secret IS DISTINCT FROM NEW.totp_secret
              OR OLD.password_hash IS DISTINCT FROM NEW.password_hash)
        EXECUTE FUNCTION jctotp_users_changed();
    """,
    # 2 (issue 24): a change counter for hosts that cannot LISTEN (through PgBouncer in
    # transaction mode). Bumped in the same transaction as the change, so a poller
    # never sees it before the change itself. Every unit of work touches one user,
    # so the lock order is always user row, then this row: no deadlock.
    """
    CREATE TABLE jctotp_changes (id INTEGER PRIMARY KEY CHECK (id = 1),
                                 counter BIGINT NOT NULL);
    INSERT INTO jctotp_changes VALUES (1, 0);
    CREATE OR REPLACE FUNCTION jctotp_users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('jctotp_users', '');
        UPDATE jctotp_changes SET counter = counter + 1 WHERE id = 1;
        RETURN NULL;
    END $$;
    """,
    pg_audit.MIGRATION,   # 3: hash-chained, append-only audit (issue 22)
    pg_hosts.MIGRATION,   # 4: a role per host (issue 22)
    pg_policy.MIGRATION,  # 5: the fleet's policy (issue 21)
    pg_codecheck.migration(),   # 6: codes checked in the database, keys out of reach (22)
    pg_codecheck.MIGRATION_7,   # 7: the check on the database's clock, constant-time (22)
    pg_userwrites.MIGRATION,    # 8: a host writes users only through functions (22)
]


def _execute(sql: str, conn: psycopg.Connection[Any]) -> Any:
    """A script of many statements: no parameters, so one simple query."""
    return conn.execute(sql.encode())


class Schema(Connections):
    """Schema and fleet metadata, on Connections."""

    expected_key_check: str | None

    def verify_key(self, check: str, key_file: str) -> None:
        """StoreError unless the database's key check value is `check` (the key file's)."""
        self.expected_key_check = check
        stored = self.meta("key_check")
        if stored is None:
            raise StoreError(f"the fleet database {self.where} has no key check: "
                             "run `jctotp fleet init` on the first host")
        if not hmac.compare_digest(stored, check):
            raise StoreError(f"key file {key_file} is not the key of the fleet database "
                             f"{self.where} (key check mismatch): copy secret_key_file from "
                             "a host of the fleet")

    def schema_version(self) -> int | None:
        """The schema version, or None when the database has no jctotp schema yet."""
        row = self._one("SELECT to_regclass('jctotp_meta') IS NOT NULL")
        if not row or not row[0]:
            return None
        row = self._one("SELECT value FROM jctotp_meta WHERE key = 'schema_version'")
        return int(row[0]) if row else 0

    def migrate(self, create: bool) -> int:
        """Bring the schema up to date (under an advisory lock: hosts start together)."""
        with self.unit_of_work():
            # another host may be migrating: wait for its lock longer than for a login
            self._run(lambda c: c.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,)),
                      LONG_DEADLINE)
            version = self.schema_version()
            if version is None:
                if not create:
                    raise StoreError(f"the fleet database {self.where} has no jctotp schema; "
                                     "run `jctotp fleet init` on the first host")
                self._rowcount("CREATE TABLE jctotp_meta (key TEXT PRIMARY KEY, "
                               "value TEXT NOT NULL)")
                self._rowcount("INSERT INTO jctotp_meta VALUES ('schema_version', '0')")
                version = 0
            if version > len(MIGRATIONS):
                raise StoreError(f"the fleet database {self.where} has schema version "
                                 f"{version}, newer than this jctotpd understands "
                                 f"({len(MIGRATIONS)}); upgrade jctotpd")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                # no parameters: one simple query, many statements
                try:
                    self._run(partial(_execute, script), LONG_DEADLINE)
                except StoreError as exc:   # e.g. a host role (issue 22): not the owner
                    raise StoreError(f"cannot upgrade the fleet schema of {self.where} to "
                                     f"version {number}: {exc}; run `jctotp fleet init "
                                     "--admin-database URI` (as the schema's owner) once"
                                     ) from None
                self._rowcount("UPDATE jctotp_meta SET value = %s WHERE key = "
                               "'schema_version'", (str(number),))
        return len(MIGRATIONS)

    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM jctotp_meta WHERE key = %s", (key,))
        return row[0] if row else None

    def claim_meta(self, key: str, value: str) -> str:
        """Store `value` unless the key has one; returns the value now stored (one statement)."""
        row = self._one(
            "WITH ins AS (INSERT INTO jctotp_meta VALUES (%(k)s, %(v)s) ON CONFLICT DO NOTHING "
            "RETURNING value) SELECT value FROM ins UNION ALL "
            "SELECT value FROM jctotp_meta WHERE key = %(k)s", {"k": key, "v": value})
        assert row is not None
        return str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        """As the schema's owner (`jctotp fleet rotate-key`): set, or delete with None.
        The hosts' syncs are woken, as by a user's change (a moved key check, a key
        handed off: they take it now, not at the next resync)."""
        with self.unit_of_work():
            if value is None:
                self._rowcount("DELETE FROM jctotp_meta WHERE key = %s", (key,))
            else:
                self._rowcount("INSERT INTO jctotp_meta VALUES (%s, %s) ON CONFLICT (key) "
                               "DO UPDATE SET value = EXCLUDED.value", (key, value))
            self._one("SELECT pg_notify('jctotp_users', '')")
            self._rowcount("UPDATE jctotp_changes SET counter = counter + 1 WHERE id = 1")

    def meta_like(self, prefix: str) -> list[str]:
        return [r[0] for r in self._all("SELECT key FROM jctotp_meta WHERE starts_with(key, %s)",
                                        (prefix,))]
