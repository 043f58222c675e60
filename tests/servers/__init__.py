"""Real servers for the integration tiers, private to one test session on 127.0.0.1.

    servers.postgres   PgCluster: PostgreSQL (issue 13, tests/fleet)
    servers.slapd      Slapd: OpenLDAP in JumpCloud's layout (issue 14, tests/ldap)
    servers.certs      a test CA, an unrelated CA, a server certificate for 127.0.0.1

Each server runs as a child of the test run in its own process group, with a
parent-death signal, so that nothing outlives pytest even when it is killed.
Each module also defines its pytest fixtures; a conftest imports them by name.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

PR_SET_PDEATHSIG = 1   # prctl(2): the signal a child gets when its parent dies


def die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """A Popen preexec_fn: `sig` to the child when the test run dies, even by SIGKILL.
    Popen runs it after its user=/group= switch, which would clear the setting."""
    def preexec() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    return preexec


class ServerProcess:
    """The life cycle both servers share; a subclass sets `dir`, `proc`, `log`,
    `stop_signal` and implements `start()` (which spawns with `spawn()`)."""

    dir: Path
    proc: subprocess.Popen | None
    stop_signal: signal.Signals = signal.SIGTERM

    @property
    def log(self) -> Path:
        raise NotImplementedError

    def start(self) -> Any:
        raise NotImplementedError

    def spawn(self, argv: list[str], **popen: Any) -> subprocess.Popen:
        """Start `argv` as our child in its own process group, output to `log`."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                argv, start_new_session=True, preexec_fn=die_with_parent(self.stop_signal),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, **popen)
        return self.proc

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        """Shut down (SIGKILL after 30 s): connections drop, new ones are refused."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGCONT)
            self._signal(self.stop_signal)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP the server: the kernel still accepts connections, nobody answers
        (a wedged server, for timeout tests)."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def started(self: S) -> S:
        """start(); on failure remove everything before raising (for the factories)."""
        try:
            self.start()
            return self
        except BaseException:
            self.destroy()
            raise

    def healthy(self) -> None:
        """Thawed and running (started again after a test stopped it)."""
        self.thaw()
        if not self.running:
            self.start()

    def destroy(self) -> None:
        """Stop and remove the server's directory (session end)."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


S = TypeVar("S", bound=ServerProcess)


def server_fixtures(new: Callable[[], S], session_name: str, name: str) -> tuple[Any, Any]:
    """Two fixtures: `session_name` (session scope: made by `new`, destroyed at the end
    even after failures) and `name` (per test: the same server, healthy before and after
    the test, so that a test that stops or freezes it leaves it up for the next)."""
    @pytest.fixture(scope="session", name=session_name)
    def session_server() -> Iterator[S]:
        server = new()
        try:
            yield server
        finally:
            server.destroy()

    @pytest.fixture(name=name)
    def server(request: pytest.FixtureRequest) -> Iterator[S]:
        shared: S = request.getfixturevalue(session_name)
        shared.healthy()
        yield shared
        shared.healthy()

    return session_server, server


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
