"""The portal's asyncio client of jctotpd's control socket: one portal.* verb per
connection, no prompts (the portal verbs take every answer as an argument)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError, ServiceUnavailable
from ..model import ExitCode
from ..transport import control_wire as cp

# A failed proof is held back fail_delay (2 s) by the daemon; a store outage
# takes longer: past this the page says "try again later".
TIMEOUT = 30.0


@dataclass(frozen=True)
class Reply:
    exit: int
    message: str = ""
    data: Any = None

    @property
    def ok(self) -> bool:
        return self.exit == ExitCode.OK


async def ask(path: str, verb: str, args: dict[str, Any], timeout: float = TIMEOUT) -> Reply:
    try:
        return await asyncio.wait_for(_ask(path, verb, args), timeout)
    except TimeoutError:
        raise ServiceUnavailable("jctotpd did not answer in time") from None
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise ServiceUnavailable(f"cannot reach jctotpd at {path}: {exc}") from None


async def _ask(path: str, verb: str, args: dict[str, Any]) -> Reply:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(cp.encode({"v": cp.VERSION, "verb": verb, "args": args}))
        await writer.drain()
        while True:
            length = cp.check_length(cp.HEADER.unpack(await reader.readexactly(4))[0])
            msg = cp.decode(await reader.readexactly(length))
            if msg.get("t") == "result":
                return Reply(int(msg.get("exit", ExitCode.REFUSED)),
                             str(msg.get("message", "")), msg.get("data"))
            if msg.get("t") == "prompt":
                raise ProtocolError(f"jctotpd asked {msg.get('text')!r}: not a portal verb?")
    finally:
        writer.close()
