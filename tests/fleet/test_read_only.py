"""A server that answers read-only is an outage (issue 24): SQLSTATE 25006 and
57P01-57P03 close the connection, libpq's read-write check refuses new ones.

(Apart from test_failover.py, whose `pg_uri` is the standby pair's.)
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.fleet


def test_a_server_turned_read_only_is_an_outage_with_one_line_each_way(pg, pg_uri, caplog):
    """One endpoint still pointing at a read-only server (a standby behind a stale VIP):
    the pooled connections end (57P01: terminated), new ones are refused (libpq's
    read-write check): one outage, one line each way, no connection to it kept, and
    the store serves again once the server takes writes. No restart."""
    from pam_jctotp.errors import StoreUnavailable
    from pam_jctotp.store.postgres import PostgresStore
    dbname = pg_uri.split("?")[0].rsplit("/", 1)[1]
    store = PostgresStore(pg_uri, min_size=2, max_size=4)
    try:
        store.add("alice", is_admin=False, password_hash="h", now=1.0)
        pg.psql(f"ALTER DATABASE {dbname} SET default_transaction_read_only = on;\n"
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                f"WHERE datname = '{dbname}';")
        with caplog.at_level("WARNING", logger="jctotpd.store"):
            for _ in range(3):
                with pytest.raises(StoreUnavailable):
                    store.update("alice", locked_at=2.0, lock_reason="test")
            time.sleep(2.5)   # probes meanwhile: still read-only, still down
            with pytest.raises(StoreUnavailable):
                store.get("alice")
            pg.psql(f"ALTER DATABASE {dbname} RESET default_transaction_read_only;")
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert store.update("alice", locked_at=3.0, lock_reason="test")
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline, caplog.text
                    time.sleep(0.2)
        assert caplog.text.count("unavailable:") == 1, caplog.text
        assert caplog.text.count("back after") == 1, caplog.text
        assert store.get("alice").locked_at == 3.0
    finally:
        pg.psql(f"ALTER DATABASE {dbname} RESET default_transaction_read_only;")
        store.close()
