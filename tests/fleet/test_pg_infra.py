"""The private PostgreSQL works as the fleet tests need it (tests/pg_server.py)."""

from __future__ import annotations

import os
import stat
import time

import psycopg
import pytest
from servers import orphan_survives
from servers.postgres import PgCluster

pytestmark = pytest.mark.fleet


def select_one(uri: str, timeout: int = 2) -> int:
    with psycopg.connect(uri, connect_timeout=timeout) as conn:
        row = conn.execute("SELECT 1").fetchone()
        assert row is not None
        return row[0]


def test_connects_by_uri_as_jctotp_with_the_passfile(pg: PgCluster) -> None:
    assert select_one(pg.uri) == 1
    with psycopg.connect(pg.uri) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            "jctotp", "jctotp")


def test_tls_verify_full_against_the_test_ca(pg: PgCluster) -> None:
    with psycopg.connect(pg.tls_uri, connect_timeout=2) as conn:
        assert conn.info.pgconn.ssl_in_use
    wrong = pg.tls_uri.replace(str(pg.ca_file), str(pg.wrong_ca_file))
    with pytest.raises(psycopg.OperationalError, match="certificate"):
        psycopg.connect(wrong, connect_timeout=2)


def test_password_only_in_a_private_passfile(pg: PgCluster) -> None:
    mode = stat.S_IMODE(os.stat(pg.passfile).st_mode)
    assert mode == 0o600
    assert "password" not in pg.uri
    # Without the passfile, scram refuses: the password is not guessable or trusted.
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(pg.bare_uri, connect_timeout=2, passfile="/dev/null")


def test_listens_on_loopback_only(pg: PgCluster) -> None:
    settings = pg.psql("SHOW listen_addresses; SHOW unix_socket_directories;").split()
    assert settings == ["127.0.0.1", str(pg.socket_dir)]


def test_fresh_database_per_test(pg_uri: str) -> None:
    with psycopg.connect(pg_uri) as conn:
        conn.execute("CREATE TABLE t (x int)")
        assert conn.execute("SELECT current_database()").fetchone() != ("jctotp",)


def test_stop_fails_fast_then_start_works_again(pg: PgCluster) -> None:
    pg.stop()
    assert not pg.running
    began = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        select_one(pg.uri, timeout=2)
    assert time.monotonic() - began < 5  # generous: a refused TCP connect is immediate
    pg.start()
    assert select_one(pg.uri) == 1


def test_open_connection_sees_the_outage(pg: PgCluster) -> None:
    conn = psycopg.connect(pg.uri, autocommit=True)
    try:
        pg.stop()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
        pg.start()


def test_frozen_server_times_out_then_thaws(pg: PgCluster) -> None:
    pg.freeze()
    try:
        began = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            select_one(pg.uri, timeout=2)   # libpq's smallest connect_timeout
        assert time.monotonic() - began < 8
    finally:
        pg.thaw()
    assert select_one(pg.uri) == 1


def test_frozen_server_holds_open_connections_too(pg: PgCluster) -> None:
    conn = psycopg.connect(pg.uri, autocommit=True)
    try:
        pg.freeze()
        # the backend of an open connection is frozen too: no answer (libpq's
        # poll, bounded here by the socket's own timeout)
        conn.pgconn.nonblocking = 1
        conn.pgconn.send_query(b"SELECT 1")
        conn.pgconn.flush()
        time.sleep(1.0)
        conn.pgconn.consume_input()
        assert conn.pgconn.is_busy()
    finally:
        pg.thaw()
        conn.close()
    assert select_one(pg.uri) == 1


def test_server_dies_with_the_test_run() -> None:
    assert not orphan_survives("servers.postgres.new_cluster()")
