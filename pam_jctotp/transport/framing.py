"""What both sockets share: a 4-byte big-endian length, then the payload; peer uids;
how they listen."""

from __future__ import annotations

import os
import socket
import struct

HEADER = struct.Struct("!I")
_CRED = struct.Struct("3i")


def socket_peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    uid: int = _CRED.unpack(creds)[1]
    return uid


def listen_unix(path: str) -> socket.socket:
    """A non-blocking listening socket at `path`, created 0600 (a wider mode is set
    after, if asked: never a window)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def inherited_listener(fd: int) -> socket.socket:
    """The listening socket a PAM process inherited from jctotpd (non-blocking)."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock
