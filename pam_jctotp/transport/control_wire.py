"""The control socket's messages: the 4-byte framing of docs/protocol.md with JSON payloads.

Client → daemon: {"v": 1, "verb": "user.add", "args": {...}}, later {"t": "answer", "text": …}
Daemon → client: {"t": "prompt", "echo": bool, "text": …} | {"t": "info", "text": …}
                 | {"t": "error", "text": …} | {"t": "result", "exit": n, "message": …, "data": …}
"""

from __future__ import annotations

import json
import struct
from typing import Any

from ..core.steps import Error, Info, Prompt, Result
from ..errors import ProtocolError

VERSION = 1
MAX_MESSAGE = 4 * 1024 * 1024
HEADER = struct.Struct("!I")


def encode(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"control message of {len(data)} bytes is too large")
    return HEADER.pack(len(data)) + data


def decode(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("control message is not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("control message is not a JSON object")
    return obj


def check_length(length: int) -> int:
    if not 1 <= length <= MAX_MESSAGE:
        raise ProtocolError(f"control message length {length} is outside 1..{MAX_MESSAGE}")
    return length


def step_message(step: Prompt | Info | Error | Result) -> dict[str, Any]:
    if isinstance(step, Prompt):
        return {"t": "prompt", "echo": step.echo, "text": step.text}
    if isinstance(step, Info):
        return {"t": "info", "text": step.text}
    if isinstance(step, Error):
        return {"t": "error", "text": step.text}
    return {"t": "result", "exit": int(step.exit), "message": step.message, "data": step.data}
