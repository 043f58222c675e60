"""A private PgBouncer in front of the private PostgreSQL (issue 24).

Transaction pooling, as large fleets run it, on 127.0.0.1 and a free port, as the
OS user postgres (PgBouncer refuses root), a child of the test run like the
cluster. Every database of the cluster is reachable under its own name (`*`), so
`uri_for(name)` is a database of `PgCluster.new_database()` through the bouncer.
The role's password reaches PgBouncer only in its auth_file (0600, for SCRAM to
the client and to the server); clients use the cluster's passfile (any port).
`max_client_conn` is low on purpose: a host that opened more than its pool would
be refused, and the tests would see it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

import pytest

from servers import ServerProcess, accepts, free_port, write_file
from servers.postgres import PgCluster

MAX_CLIENT_CONN = 40     # two or three hosts at database_pool_max 8, plus the CLI
POOL_SIZE = 6            # server connections per database


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(found).exists():
        raise RuntimeError("pgbouncer is not installed (scripts/install-test-servers.sh)")
    return found


@dataclass
class PgBouncer(ServerProcess):
    dir: Path
    pg: PgCluster
    port: int = 0
    max_client_conn: int = MAX_CLIENT_CONN
    pool_size: int = POOL_SIZE
    proc: Popen | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.dir / "pgbouncer.log"

    def uri_for(self, dbname: str) -> str:
        """The cluster's URI for `dbname`, on the bouncer's port."""
        return self.pg.uri_for(dbname).replace(f":{self.pg.port}/", f":{self.port}/", 1)

    def through(self, direct_uri: str) -> str:
        """A direct URI of the cluster (pg_uri), through the bouncer instead."""
        return direct_uri.replace(f":{self.pg.port}/", f":{self.port}/", 1)

    def server_connections(self, dbname: str) -> int:
        """Server connections to `dbname` right now (each database has its own pool)."""
        return int(self.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = "
                                f"'jctotp' AND datname = '{dbname}'").strip())

    def _write_config(self) -> Path:
        pg = pwd.getpwnam("postgres")
        password = self.pg.passfile.read_text().splitlines()[0].rsplit(":", 1)[1]
        users = write_file(self.dir / "userlist.txt", f'"jctotp" "{password}"\n', 0o600)
        ini = write_file(self.dir / "pgbouncer.ini", f"""\
[databases]
* = host=127.0.0.1 port={self.pg.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {users}
pool_mode = transaction
max_client_conn = {self.max_client_conn}
default_pool_size = {self.pool_size}
server_lifetime = 3600
server_idle_timeout = 60
""", 0o600)
        for path in (self.dir, users, ini):
            os.chown(path, pg.pw_uid, pg.pw_gid)
        return ini

    def start(self) -> PgBouncer:
        for attempt in range(3):
            if attempt or not self.port:
                self.port = free_port()
            ini = self._write_config()
            pg = pwd.getpwnam("postgres")
            proc = self.spawn([pgbouncer_binary(), str(ini)], user=pg.pw_uid, group=pg.pw_gid,
                              extra_groups=[])
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and proc.poll() is None:
                if accepts(self.port):
                    return self
                time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"pgbouncer did not start:\n{self.log_tail()}")


def new_bouncer(pg: PgCluster) -> PgBouncer:
    directory = Path(tempfile.mkdtemp(prefix="jctotp-pgbouncer-"))
    return PgBouncer(directory, pg).started()


@pytest.fixture(scope="session")
def bouncer_server(pg_cluster: PgCluster) -> Iterator[PgBouncer]:
    server = new_bouncer(pg_cluster)
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def bouncer(bouncer_server: PgBouncer, pg: PgCluster) -> PgBouncer:
    bouncer_server.healthy()
    return bouncer_server

