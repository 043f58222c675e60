"""The control socket's messages: the 4-byte framing of docs/protocol.md with JSON payloads.

Client → daemon: {"v": 1, "verb": "user.add", "args": {...}}, later {"t": "answer", "text": …}
Daemon → client: {"t": "prompt", "echo": bool, "text": …} | {"t": "info", "text": …}
                 | {"t": "error", "text": …} | {"t": "result", "exit": n, "message": …, "data": …}
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any

from ..core.steps import Error, Info, Prompt, Result
from ..errors import ProtocolError

VERSION = 1
MAX_MESSAGE = 4 * 1024 * 1024
HEADER = struct.Struct("!I")
# Real requests nest 3 or 4 deep. Python's JSON decoder recurses once per level:
# 4,000 bytes of `[` raised RecursionError (a traceback per request, issue 20).
MAX_DEPTH = 16
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)  # a JSON string: its brackets are text
_BRACKET = re.compile(r"[][{}]")


def encode(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"control message of {len(data)} bytes is too large")
    return HEADER.pack(len(data)) + data


def decode(data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("control message is not UTF-8 JSON") from None
    if too_deep(text):
        raise ProtocolError(f"control message nests deeper than {MAX_DEPTH} levels")
    try:
        obj = json.loads(text)
    except ValueError:
        raise ProtocolError("control message is not UTF-8 JSON") from None
    except RecursionError:  # not reached (too_deep); never a traceback if it were
        raise ProtocolError(f"control message nests deeper than {MAX_DEPTH} levels") from None
    if not isinstance(obj, dict):
        raise ProtocolError("control message is not a JSON object")
    return obj


def too_deep(text: str) -> bool:
    """More than MAX_DEPTH arrays or objects inside each other (outside strings)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:  # every real request: no scan
        return False
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


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
