"""Sockets used outside serving, kept here so transport/ stays the one home of socket
I/O (tests/unit/test_layers.py): doctor's probes (the PAM socket as the shim would
ask it, a TCP port) and the store's way to wake a thread blocked on a stalled
PostgreSQL connection."""

from __future__ import annotations

import os
import socket

from . import pam_wire


def ask_pam_socket(path: str, hello: str, timeout: float) -> str:
    """Send one HELLO frame on the PAM socket and return the first frame answered.
    TimeoutError when nothing comes in time; OSError when the socket does not answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(pam_wire.frame(hello))
        header = sock.recv(4, socket.MSG_WAITALL)
        if len(header) != 4:
            raise OSError(0, "closed without a verdict")
        length = pam_wire.check_length(pam_wire.HEADER.unpack(header)[0])
        return pam_wire.decode(sock.recv(length, socket.MSG_WAITALL))
    finally:
        sock.close()


def tcp_connects(host: str, port: int, timeout: float) -> None:
    """Connect and close at once (something listens there); OSError if not."""
    with socket.create_connection((host, port), timeout):
        pass


def shut_down(fd: int) -> None:
    """Shut a connection down (not close: the fd stays its owner's), so a thread
    blocked reading it wakes up with an error at once."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass   # already closed: nothing waits on it
