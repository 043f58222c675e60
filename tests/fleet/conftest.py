"""The fleet tier (issue 13) runs against one private PostgreSQL per session.

Fixtures (tests/servers/postgres.py): pg_cluster (session), pg (per test, up),
pg_uri (per test, a fresh database). `make_host` starts jctotpd "hosts": each
its own sockets, state_dir and audit log, all on one database and one key.
"""

from __future__ import annotations

import grp
import itertools
import os
import pwd
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pam"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pamdriver  # noqa: E402
from fleetlib import PREFIX  # noqa: E402
from servers.postgres import pg, pg_cluster, pg_uri  # noqa: E402,F401
from testlib import Daemon, daemon_config  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def shim() -> str:
    return pamdriver.build_shim()


@pytest.fixture
def host_roles() -> bool:
    """Whether make_host's hosts log in with roles of their own (issue 22: `jctotp fleet
    host add`) rather than as the schema's owner; a module overrides it."""
    return False


def add_host_role(host: Daemon, name: str, admin_uri: str) -> Path:
    """`jctotp fleet host add NAME` and the host's config switched to its output, as
    its sysadmin would; returns the --out dir (pgpass, config.yaml)."""
    out = Path(host.dir) / "fleet-credentials"
    host.write_config()
    done = host.cli("fleet", "host", "add", name, "--admin-database", admin_uri,
                    "--out", str(out), "--passfile", str(out / "pgpass"))
    assert done.returncode == 0, done.stderr
    host.config.update(yaml.safe_load((out / "config.yaml").read_text()))
    host.write_config()
    return out


@pytest.fixture
def make_host(pg_uri: str, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
              host_roles: bool) -> Iterator[Callable[..., Daemon]]:
    """make_host("a", **config): a daemon of the fleet; the first one runs
    `jctotp fleet init` (schema + key), the others get a copy of its key file.
    role=True (default: the host_roles fixture): it logs in as its own role."""
    started: list[Daemon] = []
    fleet_key = tmp_path_factory.mktemp("fleet") / "secret.key"

    def make(name: str, *, start: bool = True, role: bool | None = None,
             **overrides: Any) -> Daemon:
        tmp = tmp_path_factory.mktemp(f"host-{name}")
        os.chmod(tmp, 0o755)
        config = daemon_config(tmp, database=pg_uri, host_name=f"host-{name}",
                               secret_key_file=str(tmp / "secret.key"), **overrides)
        host = Daemon(tmp, config)
        if not fleet_key.exists():
            host.fleet_init()
            fleet_key.write_bytes(Path(config["secret_key_file"]).read_bytes())
        key = Path(config["secret_key_file"])
        if not key.exists():   # "scp -p" from the first host
            key.write_bytes(fleet_key.read_bytes())
            key.chmod(0o600)
        if host_roles if role is None else role:
            add_host_role(host, f"host-{name}", pg_uri)
        if start:
            host.start()
            started.append(host)
        return host

    yield make
    for host in started:
        host.stop()


_scratch = itertools.count(1)


@pytest.fixture
def scratch_accounts() -> Iterator[str]:
    """A name prefix of this test's own (`jcfl<pid>t<n>_`: unique per xdist worker and
    test) for the Linux accounts and groups it makes; they are removed afterwards, and
    nobody else's (tests of other workers run at the same time)."""
    prefix = f"{PREFIX}{os.getpid()}t{next(_scratch)}_"
    yield prefix
    for pw in pwd.getpwall():
        if pw.pw_name.startswith(prefix):
            subprocess.run(["userdel", "-r", pw.pw_name], capture_output=True)
    for gr in grp.getgrall():
        if gr.gr_name.startswith(prefix):
            subprocess.run(["groupdel", gr.gr_name], capture_output=True)
