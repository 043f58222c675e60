"""Fixtures for the fleet tier (issue 13): one private PostgreSQL for the session.

    pg_cluster   session: the PgCluster (tests/pg_server.py), stopped and removed at the end
    pg           per test: the same cluster, thawed/started again before and after the test
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


def _healthy(cluster: PgCluster) -> None:
    cluster.thaw()
    if not cluster.running:
        cluster.start()


@pytest.fixture
def pg(pg_cluster: PgCluster) -> Iterator[PgCluster]:
    _healthy(pg_cluster)
    yield pg_cluster
    _healthy(pg_cluster)   # a test that stopped or froze it leaves it up for the next


@pytest.fixture
def pg_uri(pg: PgCluster) -> str:
    return pg.new_database()
