"""The fleet tier (issue 13) runs against one private PostgreSQL per session.

Fixtures (tests/servers/postgres.py): pg_cluster (session), pg (per test, up),
pg_uri (per test, a fresh database).
"""

from servers.postgres import pg, pg_cluster, pg_uri  # noqa: F401
