"""Real servers for the integration tiers, private to one test session on 127.0.0.1.

    servers.postgres   PgCluster: PostgreSQL (issue 13, tests/fleet)
    servers.slapd      Slapd: OpenLDAP in JumpCloud's layout (issue 14, tests/ldap)
    servers.certs      a test CA, an unrelated CA, a server certificate for 127.0.0.1

Each module also defines its pytest fixtures; a conftest imports them by name.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def write_file(path: Path, data: bytes | str, mode: int = 0o644) -> Path:
    """Write with `mode` from the first byte (no window where a secret is world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    return path
