"""Client-chosen text never reaches a person or a line reader raw (issue 9 item 7).

A user name comes from whoever typed it at sshd: ESC, CR, BEL or backspace
could clear an admin's screen or forge a line; U+0085, U+2028 and U+2029 end
a line for line-based readers of the JSON audit file.
"""

from __future__ import annotations

import io
import json
import logging

import pytest

from pam_jctotp.audit import AuditLog, read
from pam_jctotp.printable import PrintableFormatter, json_line, printable

HOSTILE = "mallory\x1b[2J\rroot\x07\x08\x7f\x85\u2028\u2029\x9b\u200e\U000e0041"
BREAKERS = "\x1b\r\n\x07\x08\x7f\x85\u2028\u2029\x9b"


@pytest.mark.parametrize("ch, shown", [
    ("\x1b", "\\x1b"), ("\r", "\\x0d"), ("\n", "\\x0a"), ("\x07", "\\x07"), ("\x08", "\\x08"),
    ("\x7f", "\\x7f"), ("\x85", "\\x85"), ("\x9b", "\\x9b"), ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"), ("\u200e", "\\u200e"), ("\U000e0041", "\\U000e0041"),
    ("\\", "\\\\"), ("é", "é"), ("a b", "a b"), ("名前", "名前"),
])
def test_printable_escapes_exactly_the_non_printables(ch, shown):
    assert printable(ch) == shown


def test_printable_output_is_one_inert_line():
    out = printable(HOSTILE)
    assert out.isprintable() and len(out.splitlines()) == 1
    assert not set(BREAKERS) & set(out)
    assert printable("x\\x1b") != printable("x\x1b")  # a literal backslash is not an escape


def test_json_line_is_one_line_for_every_reader_and_keeps_the_value(tmp_path):
    line = json_line({"user": HOSTILE, "name": "José"})
    assert len(line.splitlines()) == 1 and line.isprintable()
    assert "José" in line  # readable non-ASCII stays readable
    assert json.loads(line) == {"user": HOSTILE, "name": "José"}


def test_the_audit_file_has_one_line_per_event_whatever_the_names(tmp_path):
    audit = AuditLog(str(tmp_path / "audit.jsonl"), use_syslog=False)
    for name in (HOSTILE, "alice", "\u2028x\u2029", "a\x85b"):
        assert audit.write("login_fail", name, reason="unknown_user")
    audit.close()
    text = (tmp_path / "audit.jsonl").read_text(encoding="utf-8")
    assert len(text.splitlines()) == 4  # str.splitlines breaks on U+0085/2028/2029 too
    assert not set(BREAKERS) & set(text.replace("\n", ""))
    assert [e["user"] for e in read(str(tmp_path / "audit.jsonl"))] == [
        HOSTILE, "alice", "\u2028x\u2029", "a\x85b"]


def test_the_daemon_log_formatter_escapes_the_message_not_the_traceback():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(PrintableFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test_printable")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("user=%s refused", HOSTILE)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed for %s", "bob\r")
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("WARNING user=mallory\\x1b[2J\\x0droot\\x07")
    assert not set(BREAKERS) & set(lines[0])
    assert lines[1] == "ERROR failed for bob\\x0d"
    assert lines[2].startswith("Traceback")  # the traceback keeps its lines
