"""A private PostgreSQL for tests (issue 13).

scripts/pg-test-cluster.sh creates the cluster; the postmaster then runs as our
child (as the OS user postgres), so it dies with the test run even if pytest is
killed (parent-death signal). 127.0.0.1 only, a free port, its socket and data in
a temp dir, TLS with a test CA (optional for clients: `uri` is plain, `tls_uri`
says sslmode=verify-full). The product logs in as role `jctotp` with scram-sha-256;
the password lives only in a libpq passfile (0600) that the URIs name, so no config
file the daemon reads holds it. `stop()` / `start()` take the server down and back
up mid-test (same port, same data); `freeze()` / `thaw()` make it hang instead
(SIGSTOP of the postmaster and every backend: the kernel accepts connections and
ACKs, nobody answers, as with a wedged server).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from servers import ServerProcess, free_port, server_fixtures
from servers.certs import TlsFiles, write_tls_files

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "pg-test-cluster.sh"


def postgres_binary() -> str:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                      key=lambda p: int(p.parts[-3]))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed (scripts/install-test-servers.sh)")
    return str(versions[-1])


@dataclass
class PgCluster(ServerProcess):
    """One private cluster. `uri` is what a daemon's `database:` would say."""

    dir: Path
    tls: TlsFiles
    port: int = 0
    host: str = "127.0.0.1"
    user: str = "jctotp"
    dbname: str = "jctotp"
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _databases: int = field(default=0, repr=False)
    stop_signal = signal.SIGINT   # "fast" shutdown; the parent-death signal too

    @property
    def passfile(self) -> Path:
        """libpq passfile (0600) holding the `jctotp` role's password."""
        return self.dir / "pgpass"

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    @property
    def wrong_ca_file(self) -> Path:
        return self.tls.wrong_ca_file

    @property
    def socket_dir(self) -> Path:
        """Unix socket dir (superuser access only; the product uses TCP)."""
        return self.dir / "run"

    @property
    def log(self) -> Path:
        return self.dir / "postgres.log"

    @property
    def uri(self) -> str:
        """libpq URI for role jctotp, database jctotp, naming the passfile."""
        return self.uri_for(self.dbname)

    @property
    def tls_uri(self) -> str:
        """As `uri`, with sslmode=verify-full against the test CA."""
        return self.uri_for(self.dbname, tls=True)

    @property
    def bare_uri(self) -> str:
        """No query at all: pair it with `env` (PGPASSFILE) in the client's environment."""
        return self.uri_for(self.dbname, passfile=False)

    def uri_for(self, dbname: str, *, passfile: bool = True, tls: bool = False) -> str:
        query = []
        if passfile:
            query.append(f"passfile={quote(str(self.passfile), safe='/')}")
        if tls:
            query += ["sslmode=verify-full", f"sslrootcert={quote(str(self.ca_file), safe='/')}"]
        uri = f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"
        return uri + ("?" + "&".join(query) if query else "")

    @property
    def env(self) -> dict[str, str]:
        return {"PGPASSFILE": str(self.passfile)}

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> PgCluster:
        """Start (creating the cluster on first call); on a port clash, try another port."""
        if not (self.dir / "data" / "PG_VERSION").exists():
            self.port = self.port or free_port()
            subprocess.run([str(SCRIPT), "init", str(self.dir), str(self.port)],
                           check=True, capture_output=True, timeout=60)
        for attempt in range(3):
            if attempt:
                self.port = free_port()
            if self._spawn():
                return self
        raise RuntimeError(f"PostgreSQL did not start:\n{self.log_tail()}")

    def _spawn(self) -> bool:
        """Run the postmaster in the foreground in its own process group; True once it
        accepts connections (postmaster.pid says "ready")."""
        pg = pwd.getpwnam("postgres")
        proc = self.spawn([postgres_binary(), "-D", str(self.dir / "data"), "-p", str(self.port)],
                          user=pg.pw_uid, group=pg.pw_gid, extra_groups=[])
        pidfile = self.dir / "data" / "postmaster.pid"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False   # typically a port clash: the caller picks a new port
            try:
                lines = pidfile.read_text().splitlines()
                # "standby": a hot standby accepting (read-only) connections
                if lines[0] == str(proc.pid) and lines[-1].strip() in ("ready", "standby"):
                    return True
            except (OSError, IndexError):
                pass
            time.sleep(0.02)
        self.stop()
        return False

    # --- a wedged server: every process, not only the postmaster's group ------------

    def processes(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, ...). Each child
        calls setsid(), so a signal to the postmaster's process group misses them."""
        if not self.running:
            return []
        assert self.proc is not None
        found = [self.proc.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    found.append(int(stat.parent.name))
            except (OSError, IndexError, ValueError):
                pass   # gone meanwhile
        return found

    def freeze(self) -> None:
        """SIGSTOP the postmaster, then every child: new connections hang in the
        kernel's backlog and open ones get no answer (a wedged server)."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in reversed(self.processes()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    # --- test set-up -------------------------------------------------------------

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL as the superuser over the private socket; returns unaligned output."""
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", dbname],
            input=sql, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout

    def new_database(self) -> str:
        """A fresh, empty database owned by jctotp; returns its URI (with the passfile)."""
        self._databases += 1
        name = f"jctotp_{self._databases}"
        self.psql(f"CREATE DATABASE {name} OWNER jctotp;")
        return self.uri_for(name)


def new_cluster() -> PgCluster:
    """Create and start a cluster in a fresh dir under /tmp (pytest's basetemp is 0700 root,
    which the postgres user cannot enter)."""
    directory = Path(tempfile.mkdtemp(prefix="jctotp-pg-"))
    return PgCluster(directory, write_tls_files(directory)).started()


# --- fixtures (a conftest imports these names) ------------------------------------------

pg_cluster, pg = server_fixtures(new_cluster, "pg_cluster", "pg")


@pytest.fixture
def pg_uri(pg: PgCluster) -> str:
    """A fresh, empty database owned by jctotp, as a libpq URI naming the passfile."""
    return pg.new_database()
