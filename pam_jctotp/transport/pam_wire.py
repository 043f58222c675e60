"""The PAM wire protocol, version 1 (docs/protocol.md): framing and parsing.

Pure functions over bytes; the server feeds them what it reads. Imports only
the vocabulary (model, steps, errors, secret).
"""

from __future__ import annotations

import re
import struct

from ..core.steps import Error, Info, Prompt, Verdict
from ..errors import ProtocolError
from ..model import LoginRequest, VerdictCode
from ..secret import Secret

MAX_FRAME = 16384
VERSION_LINE = "HELLO JCTOTP/1"
HEADER = struct.Struct("!I")
TIMEOUT_RANGE = range(1, 61)  # the shim's timeout= option, seconds
_HELLO_KEYS = {"call", "service", "user", "rhost", "tty", "factors", "authtok", "timeout",
               "acct_hint", "uid"}
# Optional: authtok (use_first_pass), and what shims older than these keys do not send.
_REQUIRED = _HELLO_KEYS - {"authtok", "timeout", "acct_hint", "uid"}
UID_MAX = 2**32 - 1
ACCT_OK = "SUCCESS_ACCT_OK"  # SUCCESS, and the account stage passes now (docs/protocol.md)


def frame(payload: str) -> bytes:
    data = payload.encode("utf-8")
    if not 1 <= len(data) <= MAX_FRAME:
        raise ProtocolError(f"frame of {len(data)} bytes is outside 1..{MAX_FRAME}")
    if b"\0" in data:
        raise ProtocolError("frame contains NUL")
    return HEADER.pack(len(data)) + data


def check_length(length: int) -> int:
    if not 1 <= length <= MAX_FRAME:
        raise ProtocolError(f"frame length {length} is outside 1..{MAX_FRAME}")
    return length


def decode(data: bytes) -> str:
    if b"\0" in data:
        raise ProtocolError("frame contains NUL")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("frame is not valid UTF-8") from None


def _timeout(value: str | None) -> int | None:
    if value is None:
        return None
    # Plain decimal digits only: int() would also take " 7", "+7", "0_7" or "٧".
    if not re.fullmatch(r"[0-9]{1,2}", value) or int(value) not in TIMEOUT_RANGE:
        raise ProtocolError(f"bad timeout {value[:8]!r} (1..60 seconds)")
    return int(value)


def _uid(value: str | None) -> int | None:
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,10}", value) or int(value) > UID_MAX:
        raise ProtocolError(f"bad uid {value[:12]!r}")
    return int(value)


def parse_hello(payload: str) -> LoginRequest:
    lines = payload.split("\n")
    if lines[0] != VERSION_LINE:
        if lines[0].startswith("HELLO "):
            raise ProtocolError(f"unsupported protocol version {lines[0][6:]!r}")
        raise ProtocolError("first frame is not HELLO")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or key not in _HELLO_KEYS:
            raise ProtocolError(f"bad HELLO line {key[:32]!r}")
        if key in fields:
            raise ProtocolError(f"HELLO key {key!r} repeated")
        fields[key] = value
    missing = _REQUIRED - set(fields)
    if missing:
        raise ProtocolError(f"HELLO lacks {', '.join(sorted(missing))}")
    if fields["call"] not in ("auth", "acct", "passwd_prelim", "passwd"):
        raise ProtocolError(f"bad call {fields['call'][:16]!r}")
    if fields["factors"] not in ("password,totp", "totp"):
        raise ProtocolError(f"bad factors {fields['factors'][:32]!r}")
    if not fields["user"]:
        raise ProtocolError("empty user")
    if fields.get("acct_hint", "1") != "1":
        raise ProtocolError(f"bad acct_hint {fields['acct_hint'][:8]!r}")
    authtok = fields.get("authtok")
    return LoginRequest(call=fields["call"], service=fields["service"], user=fields["user"],
                        rhost=fields["rhost"], tty=fields["tty"], factors=fields["factors"],
                        authtok=Secret(authtok) if authtok is not None else None,
                        timeout=_timeout(fields.get("timeout")), uid=_uid(fields.get("uid")),
                        acct_hint=fields["call"] == "auth" and "acct_hint" in fields)


def parse_answer(payload: str) -> str:
    tag, _, text = payload.partition(" ")
    if tag != "ANSWER":
        raise ProtocolError(f"expected ANSWER, got {tag[:16]!r}")
    return text


def encode_step(step: Prompt | Info | Error | Verdict, acct_hint: bool = False) -> bytes:
    """One frame; with `acct_hint` (the shim's HELLO asked) a success that vouches
    for the account stage (Verdict.account_ok) is sent as SUCCESS_ACCT_OK."""
    if isinstance(step, Prompt):
        return frame(("PROMPT_ON " if step.echo else "PROMPT_OFF ") + step.text)
    if isinstance(step, Info):
        return frame("INFO " + step.text)
    if isinstance(step, Error):
        return frame("ERROR " + step.text)
    if step.code not in VerdictCode.__members__.values():
        raise ProtocolError(f"unknown verdict {str(step.code)[:16]!r}")
    if acct_hint and step.account_ok and step.code == VerdictCode.SUCCESS:
        return frame("VERDICT " + ACCT_OK)
    return frame("VERDICT " + step.code)
