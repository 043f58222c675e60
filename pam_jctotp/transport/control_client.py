"""A client of the control socket, for the CLI (cli/client.py) and the tests."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError, ServiceUnavailable
from ..model import ExitCode
from ..transport import control_wire as cp

# (kind, text, echo) -> answer for prompts, None for info/error
Interact = Callable[[str, str, bool], str | None]


@dataclass(frozen=True)
class Reply:
    """The daemon's last word on a request."""

    exit: int
    message: str = ""
    data: Any = None


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ServiceUnavailable("the daemon closed the connection before answering "
                                     "(see its log: journalctl -u jctotpd)")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def request(path: str, verb: str, args: dict[str, Any] | None = None,
            interact: Interact | None = None, timeout: float | None = 60.0) -> Reply:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise ServiceUnavailable(f"cannot reach jctotpd at {path}: {exc.strerror} "
                                     "(is it running? systemctl status jctotpd)") from None
        sock.sendall(cp.encode({"v": cp.VERSION, "verb": verb, "args": args or {}}))
        while True:
            length = cp.check_length(cp.HEADER.unpack(_recv_exact(sock, 4))[0])
            msg = cp.decode(_recv_exact(sock, length))
            kind = msg.get("t")
            if kind == "result":
                return Reply(int(msg.get("exit", ExitCode.REFUSED)),
                             str(msg.get("message", "")), msg.get("data"))
            text = str(msg.get("text", ""))
            if kind in ("info", "error"):
                if interact:
                    interact(kind, text, False)
            elif kind == "prompt":
                if interact is None:
                    raise ProtocolError(f"the daemon asks {text!r} but no one can answer")
                answer = interact("prompt", text, bool(msg.get("echo")))
                sock.sendall(cp.encode({"t": "answer", "text": answer or ""}))
            else:
                raise ProtocolError(f"unexpected control message {kind!r}")
    except TimeoutError:
        raise ServiceUnavailable("the daemon did not answer in time") from None
    except OSError as exc:  # reset or broken pipe: the daemon went away mid-request
        raise ServiceUnavailable(f"the daemon closed the connection ({exc.strerror}); "
                                 "see its log: journalctl -u jctotpd") from None
    finally:
        sock.close()
