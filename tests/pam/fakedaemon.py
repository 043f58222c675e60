"""A scriptable stand-in for jctotpd's PAM socket, for testing the shim.

Each connection runs `script(conn)` in its own thread; `conn` parses the
shim's HELLO and offers frame-level helpers, and also lets a script send
raw bytes to break the protocol on purpose. Everything the shim sent is
kept in `daemon.connections`.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Conn:
    sock: socket.socket
    hello_raw: str = ""
    hello: dict[str, str] = field(default_factory=dict)
    received: list[str] = field(default_factory=list)  # every payload the shim sent
    eof: bool = False

    def _read_exact(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                self.eof = True
                return None
            buf += chunk
        return buf

    def recv(self, timeout: float | None = 10.0) -> str | None:
        """The next payload from the shim, or None at EOF / timeout."""
        self.sock.settimeout(timeout)
        try:
            hdr = self._read_exact(4)
            if hdr is None:
                return None
            payload = self._read_exact(struct.unpack(">I", hdr)[0])
        except (TimeoutError, OSError):
            return None
        if payload is None:
            return None
        text = payload.decode("utf-8")
        self.received.append(text)
        return text

    def send(self, payload: str | bytes) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.send_raw(struct.pack(">I", len(data)) + data)

    def send_raw(self, data: bytes) -> None:
        # the shim may have gone already; the test checks its verdict
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def prompt(self, text: str, echo: bool = False) -> str | None:
        """Send PROMPT_OFF/PROMPT_ON; the answer's text, or None if the shim left."""
        self.send(("PROMPT_ON " if echo else "PROMPT_OFF ") + text)
        reply = self.recv()
        if reply is None:
            return None
        assert reply == "ANSWER" or reply.startswith("ANSWER "), reply
        return reply[7:]

    def verdict(self, code: str) -> None:
        self.send("VERDICT " + code)

    def wait_closed(self, timeout: float = 15.0) -> bool:
        """Block until the shim closes its end (or timeout); True if it did."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(4096):
                pass
        except (TimeoutError, OSError):
            return False
        self.eof = True
        return True


Script = Callable[[Conn], object]


def parse_hello(payload: str) -> dict[str, str]:
    first, _, rest = payload.partition("\n")
    assert first == "HELLO JCTOTP/1", first
    assert payload.endswith("\n"), payload
    fields: dict[str, str] = {}
    for line in rest.split("\n")[:-1]:
        key, sep, value = line.partition("=")
        assert sep, line
        assert key not in fields, f"duplicate {key}"
        fields[key] = value
    return fields


class FakeDaemon:
    """Listens on a Unix socket in a short temp dir (sun_path is 108 bytes)."""

    def __init__(self, script: Script, *, read_hello: bool = True) -> None:
        self.script = script
        self.read_hello = read_hello
        self.dir = tempfile.mkdtemp(prefix="jcfake", dir="/tmp")
        self.path = str(Path(self.dir) / "pam.sock")
        self.connections: list[Conn] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(128)
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            conn = Conn(sock)
            with self._lock:
                self.connections.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self._threads.append(t)
            t.start()

    def _serve(self, conn: Conn) -> None:
        try:
            if self.read_hello:
                hello = conn.recv()
                if hello is None:
                    return
                conn.hello_raw = hello
                conn.hello = parse_hello(hello)
            self.script(conn)
        except BaseException as exc:  # reported by close()
            with self._lock:
                self.errors.append(exc)
        finally:
            conn.sock.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._acceptor.join(timeout=5)
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.errors:
            raise self.errors[0]

    def __enter__(self) -> FakeDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
