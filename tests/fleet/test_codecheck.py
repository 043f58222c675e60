"""One TOTP rule, two homes (issue 22): core/totp.py checks codes on SQLite (and for a
break-glass copy), store/pg_codecheck.py's SQL checks them in the fleet database.
Both are held to RFC 6238's SHA-1 vectors, and to each other on the same clock with
random keys, times, drifts and windows."""

from __future__ import annotations

import base64
import os
import re

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pam_jctotp.core.totp import Totp
from pam_jctotp.secret import Secret
from pam_jctotp.store.postgres import PostgresStore

pytestmark = pytest.mark.fleet

# RFC 6238 appendix B, SHA-1: the ASCII key "12345678901234567890", 8 digits, 30 s.
RFC_KEY = b"12345678901234567890"
RFC_VECTORS = [(59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
               (1234567890, "89005924"), (2000000000, "69279037"), (20000000000, "65353130")]


@pytest.fixture(scope="module")
def db(pg_cluster):
    """One fleet schema (as the owner) for the module; the guess ceiling lifted, since
    these tests ask thousands of wrong codes on purpose."""
    uri = pg_cluster.new_database()
    PostgresStore(uri, create=True).close()
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("UPDATE jctotp_totp_rule SET guard_limit = 1000000000")
        conn.execute("UPDATE jctotp_totp_rule SET clock = 'host'")   # the times given here
        conn.execute("INSERT INTO users (name, created_at) VALUES ('alice', 0)")
        yield conn


def set_rule(db, digits: int = 6, period: int = 30, window: int = 1) -> None:
    db.execute("UPDATE jctotp_totp_rule SET digits = %s, period = %s, drift = %s",
               (digits, period, window))


def put_key(db, key: bytes) -> None:
    db.execute("SELECT jctotp_put_key('alice', %s)", (key,))
    db.execute("UPDATE users SET last_step = -1 WHERE name = 'alice'")


def sql_check(db, code: str | None, now: float, consume: bool = False) -> tuple[str, int | None]:
    row = db.execute("SELECT * FROM jctotp_check_code('alice', %s, NULL, %s, %s, false)",
                     (code, now, consume)).fetchone()
    return row[0], row[1]


def secret_of(key: bytes) -> Secret:
    return Secret(base64.b32encode(key).decode().rstrip("="))


def test_both_homes_give_rfc_6238s_sha1_vectors(db):
    totp = Totp(digits=8)
    key_text = secret_of(RFC_KEY)
    set_rule(db, digits=8, window=0)
    put_key(db, RFC_KEY)
    try:
        for now, code in RFC_VECTORS:
            step = now // 30
            assert totp.code(key_text, step) == code
            assert db.execute("SELECT jctotp_hotp(%s, %s, 8)", (RFC_KEY, step)
                              ).fetchone()[0] == code
            assert sql_check(db, code, now) == ("totp", step)
            assert totp.match(key_text, code, now) == step
            wrong = f"{(int(code) + 1) % 10 ** 8:08d}"
            assert sql_check(db, wrong, now) == ("wrong_code", None)
    finally:
        set_rule(db)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.binary(min_size=10, max_size=64), now=st.floats(0, 2 ** 33),
       drift=st.integers(-3, 3), window=st.integers(0, 3), digits=st.sampled_from([6, 8]),
       period=st.sampled_from([15, 30, 60]), noise=st.booleans(),
       spaces=st.booleans())
def test_sql_and_python_agree_on_the_same_clock(db, key, now, drift, window, digits, period,
                                                noise, spaces):
    """The same key, time, drift and rule: the same step accepted, or none."""
    totp = Totp(digits, period, window)
    secret = secret_of(key)
    step = max(0, totp.step(now) + drift)
    code = totp.code(secret, step)
    if noise:   # a guess: another code, maybe right by chance (both must say so)
        code = f"{(int(code) * 7 + 3) % 10 ** digits:0{digits}d}"
    typed = f" {code[:3]} {code[3:]} " if spaces else code
    set_rule(db, digits, period, window)
    put_key(db, key)
    python = totp.match(secret, typed, now)
    canonical = totp.canonical(typed)
    outcome, sql_step = sql_check(db, canonical, now)
    assert sql_step == python
    assert outcome == ("wrong_code" if python is None else "totp")


def test_replay_watermark_and_consume_in_the_same_statement(db):
    set_rule(db)
    key = os.urandom(20)
    put_key(db, key)
    totp, secret, now = Totp(), secret_of(key), 1_700_000_000.0
    code = totp.code(secret, totp.step(now))
    assert sql_check(db, code, now, consume=False) == ("totp", totp.step(now))
    assert sql_check(db, code, now, consume=True) == ("totp", totp.step(now))
    assert sql_check(db, code, now, consume=True) == ("replay", totp.step(now))
    older = totp.code(secret, totp.step(now) - 1)
    assert sql_check(db, older, now, consume=True) == ("replay", totp.step(now) - 1)
    assert db.execute("SELECT last_step FROM users WHERE name = 'alice'").fetchone()[0] \
        == totp.step(now)


def test_the_guess_ceiling_no_host_can_reset(db):
    """guard_limit wrong codes per guard_interval of the database's clock, then no
    check at all, whatever the users table's counters say; a new key starts afresh."""
    set_rule(db)
    key = os.urandom(20)
    put_key(db, key)
    db.execute("UPDATE jctotp_totp_rule SET guard_limit = 3")
    try:
        totp, secret, now = Totp(), secret_of(key), 1_700_000_000.0
        right = totp.code(secret, totp.step(now))
        wrong = f"{(int(right) + 1) % 10 ** 6:06d}"
        assert [sql_check(db, wrong, now)[0] for _ in range(3)] == ["wrong_code"] * 3
        db.execute("UPDATE users SET failed_count = 0, fail_window_start = NULL, "
                   "locked_at = NULL")   # what a stolen host could do to the counters
        assert sql_check(db, right, now) == ("throttled", None)
        put_key(db, key)
        assert sql_check(db, right, now) == ("totp", totp.step(now))
    finally:
        db.execute("UPDATE jctotp_totp_rule SET guard_limit = 1000000000")


def test_codes_are_compared_as_keyed_digests_every_candidate(db):
    """No plain `=` on a code or a recovery hash (it stops at the first differing
    byte): per call a random key, and the HMACs of both sides compared, for every
    candidate and every unused recovery code, with no early exit."""
    source = db.execute("SELECT prosrc FROM pg_proc WHERE proname = 'jctotp_check_code'"
                        ).fetchone()[0]
    compares = re.findall(r"[\w.()]+\s*=\s*p_(?:code|recovery)\b", source)
    assert compares == [], compares
    assert "gen_random_bytes" in source and "EXIT" not in source.upper().split()
    set_rule(db)
    key = os.urandom(20)
    put_key(db, key)
    totp, secret, now = Totp(), secret_of(key), 1_700_000_000.0
    for drift in (-1, 0, 1):   # a match at each candidate, and none
        code = totp.code(secret, totp.step(now) + drift)
        assert sql_check(db, code, now) == ("totp", totp.step(now) + drift)
    db.execute("""INSERT INTO recovery_codes ("user", code_hash) VALUES """
               "('alice', 'h1'), ('alice', 'h2'), ('alice', 'h3')")
    try:
        call = "SELECT * FROM jctotp_check_code('alice', NULL, %s, %s, true, false)"
        assert db.execute(call, ("h2", now)).fetchone()[0] == "recovery"
        assert db.execute(call, ("h2", now)).fetchone()[0] == "wrong_code"   # used
        assert db.execute(call, ("h4", now)).fetchone()[0] == "wrong_code"
        assert [r[0] for r in db.execute(
            """SELECT code_hash FROM recovery_codes WHERE "user" = 'alice' """
            "AND used_at IS NULL ORDER BY 1")] == ["h1", "h3"]
    finally:
        db.execute("""DELETE FROM recovery_codes WHERE "user" = 'alice'""")


def test_keys_sealed_before_are_opened_by_the_owner_after_the_upgrade(pg_cluster, monkeypatch):
    """A fleet of before migration 5 (keys sealed with the fleet key in users): the
    upgrade moves them out of the hosts' reach, and the owner, who holds the key,
    makes them checkable; an unconfirmed key is dropped (its user sees a new one)."""
    from pam_jctotp import daemon
    from pam_jctotp.core.accounts import PENDING_PURPOSE, TOTP_PURPOSE
    from pam_jctotp.crypto import SecretBox
    from pam_jctotp.store.postgres import schema

    uri, key = pg_cluster.new_database(), os.urandom(32)
    box, secret = SecretBox(key), Totp.new_secret()
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:4])
        PostgresStore(uri, create=True).close()
    with psycopg.connect(uri, autocommit=True) as db:   # as the jctotpd of then wrote it
        db.execute("INSERT INTO users (name, created_at, totp_secret, pending_secret) "
                   "VALUES ('bob', 0, %s, %s)",
                   (box.seal(secret, "bob", TOTP_PURPOSE),
                    box.seal(Totp.new_secret(), "bob", PENDING_PURPOSE)))
    new = PostgresStore(uri, unseal=daemon.unsealer(key))
    with psycopg.connect(uri, autocommit=True) as owner:   # the time given below
        owner.execute("UPDATE jctotp_totp_rule SET clock = 'host'")
    try:
        rec = new.get("bob")
        assert rec.pending_secret is None and len(rec.totp_secret) == 16   # an id
        totp, now = Totp(), 1_700_000_000.0
        code = totp.code(secret, totp.step(now))
        assert new.verify_code("bob", code, None, now, True, True) == ("totp", totp.step(now))
    finally:
        new.close()
