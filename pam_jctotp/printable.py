"""Text that a client chose, made safe for a person's terminal or a line reader.

User names come from remote clients (sshd passes whatever was typed). Raw,
an ESC, CR, BEL or backspace in a name can clear an admin's screen or forge
a log line, and U+0085, U+2028 and U+2029 end a line for many line-based
readers. So wherever a person or a line reader sees such text (the daemon
log, the audit file, `jctotp audit`), every non-printable character is shown
as an escape; `--json` output keeps the exact value.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

# Not str.isprintable(): C0, DEL, C1 (U+0085 too), U+2028/2029, format and
# unassigned characters. Space is printable; the other separators are not.
_NONPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _escape(ch: str) -> str:
    n = ord(ch)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def printable(text: str) -> str:
    """`text` with backslashes doubled and every non-printable character escaped
    (\\x1b, \\u2028, ...): one line, nothing a terminal acts on, unambiguous."""
    return "".join(_escape(c) if not c.isprintable() else "\\\\" if c == "\\" else c
                   for c in text)


# A connection string's password: libpq's key=value form (quoted or not), a
# URI's query parameter, and a URI's user:password@ (issue 20 item 6).
_DSN_PASSWORD = re.compile(r"""(\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|[^\s&'"]+)""",
                           re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(://[^/?#@\s:]*:)[^/?#\s]*@")  # to the authority's last @


def redact_dsn(text: str) -> str:
    """`text` with any connection-string password shown as ***: a database value
    in a config error, a log line or doctor's output never echoes it."""
    return _URI_PASSWORD.sub(r"\1***@", _DSN_PASSWORD.sub(r"\1***", text))


def _json_escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch.isprintable():
        return ch
    data = ch.encode("utf-16-be")  # astral characters as a surrogate pair, as JSON wants
    return "".join(f"\\u{int.from_bytes(data[i:i + 2], 'big'):04x}"
                   for i in range(0, len(data), 2))


def json_line(obj: Any) -> str:
    """One JSON text on one line for every reader: readable non-ASCII is kept,
    non-printables (U+0085, U+2028, U+2029, C1, DEL, ...) are \\u escapes.
    json.dumps already escapes C0 and quotes; anything left that is not
    printable can only sit inside a string, where \\uXXXX means the same."""
    return _NONPRINTABLE.sub(_json_escape, json.dumps(obj, ensure_ascii=False))


class PrintableFormatter(logging.Formatter):
    """The daemon log's formatter: a record's message never carries a control
    character (tracebacks, added after the message, keep their lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        text = redact_dsn(super().formatMessage(record))
        return _NONPRINTABLE.sub(lambda m: m.group() if m.group().isprintable()
                                 else _escape(m.group()), text)
