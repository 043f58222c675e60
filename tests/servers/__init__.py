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

PR_SET_PDEATHSIG = 1   # prctl(2): the signal a child gets when its parent dies


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


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def orphan_survives(factory: str, timeout: float = 10) -> bool:
    """Start a server with `factory` (an expression, e.g. "servers.slapd.new_slapd()") in a
    child Python, SIGKILL that child, and tell whether the server outlived it."""
    import shutil
    import subprocess
    import sys
    import time
    module = factory.rsplit(".", 1)[0]
    code = (f"import os, signal, sys; sys.path.insert(0, {str(Path(__file__).parent.parent)!r})\n"
            f"import {module}\nserver = {factory}\n"
            "print(server.proc.pid, server.dir, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60).stdout.split()
    pid, directory = int(out[0]), out[1]
    try:
        deadline = time.monotonic() + timeout
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        survived = not gone(pid)
        if survived:
            os.kill(pid, 9)
        return survived
    finally:
        shutil.rmtree(directory, ignore_errors=True)
