"""What both sockets share: a 4-byte big-endian length, then the payload; peer uids."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Callable

HEADER = struct.Struct("!I")
_CRED = struct.Struct("3i")


async def read_payload(reader: asyncio.StreamReader, check_length: Callable[[int], int],
                       timeout: float) -> bytes:
    """One frame of either socket; only the size limit (check_length) differs.
    (asyncio.timeout, not wait_for: no task per read.)"""
    async with asyncio.timeout(timeout):
        header = await reader.readexactly(HEADER.size)
    length = check_length(HEADER.unpack(header)[0])
    async with asyncio.timeout(timeout):
        return await reader.readexactly(length)


def peer_uid(writer: asyncio.StreamWriter) -> int:
    """The uid the kernel reports for the peer (SO_PEERCRED), never a claimed name."""
    return socket_peer_uid(writer.get_extra_info("socket"))


def socket_peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    uid: int = _CRED.unpack(creds)[1]
    return uid
