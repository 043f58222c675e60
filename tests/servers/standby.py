"""A private primary and its streaming standby, synchronous (issue 24).

The primary is a fresh PgCluster; the standby is made from it with
pg_basebackup (-R: standby.signal and primary_conninfo over the primary's
private socket) and runs on its own port and socket dir, on 127.0.0.1. Then the
primary waits for the standby at every commit (`synchronous_standby_names =
'*'`, `synchronous_commit = on`, set with ALTER SYSTEM after the copy so that
the standby, once promoted, waits for nobody). `uri` names both hosts, primary
first: what a fleet host's `database:` says to fail over.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from servers import free_port
from servers.postgres import PgCluster, new_cluster, postgres_binary


@dataclass
class StandbyPair:
    primary: PgCluster
    standby: PgCluster

    @property
    def uri(self) -> str:
        p, s = self.primary, self.standby
        return (f"postgresql://{p.user}@{p.host}:{p.port},{s.host}:{s.port}/{p.dbname}"
                f"?passfile={quote(str(p.passfile), safe='/')}")

    def sync_state(self) -> str:
        return self.primary.psql("SELECT sync_state FROM pg_stat_replication").strip()

    def kill_primary(self) -> None:
        """SIGKILL the postmaster and every child at once (a machine that died)."""
        for pid in self.primary.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        if self.primary.proc is not None:
            self.primary.proc.wait(10)
        self.primary.proc = None

    def promote(self) -> None:
        """pg_promote() on the standby; returns once it takes writes."""
        assert self.standby.psql("SELECT pg_promote(true, 60)").strip() == "t"

    def destroy(self) -> None:
        for server in (self.standby, self.primary):
            server.destroy()


def new_pair() -> StandbyPair:
    primary = new_cluster()
    directory = Path(tempfile.mkdtemp(prefix="jctotp-pg-standby-"))
    try:
        pg = pwd.getpwnam("postgres")
        os.chown(directory, pg.pw_uid, pg.pw_gid)
        os.chmod(directory, 0o700)
        run = directory / "run"
        run.mkdir(mode=0o700)
        os.chown(run, pg.pw_uid, pg.pw_gid)
        bindir = Path(postgres_binary()).parent
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_basebackup"),
                        "-D", str(directory / "data"), "-h", str(primary.socket_dir),
                        "-p", str(primary.port), "-U", "postgres", "-R", "-X", "stream",
                        "-c", "fast"], check=True, capture_output=True, timeout=120)
        port = free_port()
        with open(directory / "data" / "postgresql.conf", "a") as conf:
            conf.write(f"\n# standby.py\nport = {port}\nunix_socket_directories = '{run}'\n"
                       "hot_standby = on\n")
        shutil.copy2(primary.passfile, directory / "pgpass")
        standby = PgCluster(directory, primary.tls, port=port).started()
    except BaseException:
        primary.destroy()
        shutil.rmtree(directory, ignore_errors=True)
        raise
    pair = StandbyPair(primary, standby)
    primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*';\n"
                  "ALTER SYSTEM SET synchronous_commit = 'on';\nSELECT pg_reload_conf();\n")
    deadline = time.monotonic() + 30
    while pair.sync_state() != "sync":
        if time.monotonic() > deadline:
            pair.destroy()
            raise RuntimeError("the standby did not become synchronous")
        time.sleep(0.1)
    return pair
