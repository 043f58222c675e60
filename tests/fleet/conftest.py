"""Fixtures for the fleet tier (issue 13): one private PostgreSQL for the session.

    pg_cluster   session: the PgCluster (tests/pg_server.py), stopped and removed at the end
    pg           per test: the same cluster, started again if an earlier test left it down
    pg_uri       per test: a fresh empty database owned by jctotp, as a libpq URI
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pg_server import PgCluster, new_cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = new_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg(pg_cluster: PgCluster) -> PgCluster:
    if not pg_cluster.running:
        pg_cluster.start()
    return pg_cluster


@pytest.fixture
def pg_uri(pg: PgCluster) -> str:
    return pg.new_database()
