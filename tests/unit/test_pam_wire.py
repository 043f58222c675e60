"""The PAM wire protocol v1 (docs/pam_wire.md): pam_jctotp/pam_wire.py."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pam_jctotp.core.steps import Error, Info, Prompt, Verdict
from pam_jctotp.errors import ProtocolError
from pam_jctotp.model import VerdictCode
from pam_jctotp.secret import Secret
from pam_jctotp.transport import pam_wire

VERDICTS = tuple(VerdictCode)

FIELDS = {"call": "auth", "service": "sshd", "user": "alice", "rhost": "203.0.113.9",
          "tty": "ssh", "factors": "password,totp"}


def hello(first: str = pam_wire.VERSION_LINE, **fields: str | None) -> str:
    values = {**FIELDS, **fields}
    return first + "\n" + "".join(f"{k}={v}\n" for k, v in values.items() if v is not None)


def test_hello_parses():
    req = pam_wire.parse_hello(hello())
    assert (req.call, req.service, req.user, req.rhost, req.tty, req.factors) == \
        ("auth", "sshd", "alice", "203.0.113.9", "ssh", "password,totp")
    assert req.authtok is None and req.password_factor


def test_hello_keys_in_any_order_with_authtok():
    payload = "HELLO JCTOTP/1\nauthtok=pa=ss word\nfactors=totp\ntty=\nrhost=\nuser=bob\n" \
              "service=su\ncall=acct"  # no trailing newline either
    req = pam_wire.parse_hello(payload)
    assert req.authtok == Secret("pa=ss word")  # only the first '=' splits
    assert (req.call, req.factors, req.rhost, req.tty) == ("acct", "totp", "", "")
    assert not req.password_factor


# --- the shim's timeout= (optional) -------------------------------------------------------

def test_hello_without_timeout():
    assert pam_wire.parse_hello(hello()).timeout is None


@pytest.mark.parametrize("value, seconds", [("1", 1), ("10", 10), ("60", 60), ("07", 7)])
def test_hello_with_timeout(value, seconds):
    assert pam_wire.parse_hello(hello(timeout=value)).timeout == seconds


@pytest.mark.parametrize("value", ["0", "61", "100", "-1", "+5", " 5", "5 ", "", "5s", "1e1",
                                   "0x10", "\u0665", "5.0", "1_0"])
def test_a_malformed_timeout_is_a_protocol_error(value):
    with pytest.raises(ProtocolError, match="timeout"):
        pam_wire.parse_hello(hello(timeout=value))


def test_timeout_is_said_once():
    with pytest.raises(ProtocolError, match="repeated"):
        pam_wire.parse_hello(hello(timeout="5") + "timeout=6\n")


# --- the shim's uid= (optional: older shims do not send it) -------------------------------

def test_hello_without_uid():
    assert pam_wire.parse_hello(hello()).uid is None


@pytest.mark.parametrize("value, uid", [("0", 0), ("1000", 1000), ("4294967295", 2**32 - 1),
                                        ("007", 7)])
def test_hello_with_uid(value, uid):
    assert pam_wire.parse_hello(hello(uid=value)).uid == uid


@pytest.mark.parametrize("value", ["", "-1", "+5", " 5", "5 ", "4294967296", "12345678901",
                                   "0x10", "1e3", "\u0665", "1_0", "root"])
def test_a_malformed_uid_is_a_protocol_error(value):
    with pytest.raises(ProtocolError, match="uid"):
        pam_wire.parse_hello(hello(uid=value))


def test_uid_is_said_once():
    with pytest.raises(ProtocolError, match="repeated"):
        pam_wire.parse_hello(hello(uid="0") + "uid=1000\n")


@pytest.mark.parametrize("key", sorted(FIELDS))
def test_missing_key(key):
    with pytest.raises(ProtocolError, match=f"lacks {key}"):
        pam_wire.parse_hello(hello(**{key: None}))


@pytest.mark.parametrize("key", sorted(FIELDS) + ["authtok"])
def test_repeated_key(key):
    with pytest.raises(ProtocolError, match="repeated"):
        pam_wire.parse_hello(hello(authtok="pw") + f"{key}=again\n")


@pytest.mark.parametrize("line", ["shell=/bin/sh", "USER=alice", "user", " user=alice",
                                  "=x"])
def test_unknown_or_malformed_line(line):
    with pytest.raises(ProtocolError, match="bad HELLO line"):
        pam_wire.parse_hello(hello() + line + "\n")


@pytest.mark.parametrize("first", ["HELLO JCTOTP/2", "HELLO JCTOTP/1.1", "HELLO ", "HELLO x"])
def test_bad_version_mentions_version(first):
    with pytest.raises(ProtocolError, match="version"):
        pam_wire.parse_hello(hello(first))


@pytest.mark.parametrize("first", ["", "ANSWER x", "hello JCTOTP/1", "HELLO JCTOTP/1 ",
                                   "\nHELLO JCTOTP/1"])
def test_first_line_must_be_hello(first):
    with pytest.raises(ProtocolError):
        pam_wire.parse_hello(hello(first))


@pytest.mark.parametrize("factors", ["", "password", "totp,password", "TOTP", "password,totp "])
def test_bad_factors(factors):
    with pytest.raises(ProtocolError, match="factors"):
        pam_wire.parse_hello(hello(factors=factors))


@pytest.mark.parametrize("call", ["", "session", "AUTH", "auth "])
def test_bad_call(call):
    with pytest.raises(ProtocolError, match="call"):
        pam_wire.parse_hello(hello(call=call))


def test_empty_user():
    with pytest.raises(ProtocolError, match="empty user"):
        pam_wire.parse_hello(hello(user=""))


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_hello_raises_only_protocol_errors(text):
    with contextlib.suppress(ProtocolError):
        pam_wire.parse_hello(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(FIELDS) + ["authtok", "uid", "x", ""]),
                          st.text(alphabet=st.characters(blacklist_characters="\n"))),
                max_size=9))
def test_parse_hello_on_near_valid_input(pairs):
    text = pam_wire.VERSION_LINE + "\n" + "\n".join(f"{k}={v}" for k, v in pairs)
    try:
        req = pam_wire.parse_hello(text)
    except ProtocolError:
        return
    assert req.call in ("auth", "acct") and req.factors in ("password,totp", "totp")
    assert req.user
    assert req.uid is None or 0 <= req.uid < 2**32


# --- framing ------------------------------------------------------------------

def test_frame_layout():
    assert pam_wire.frame("VERDICT SUCCESS") == b"\x00\x00\x00\x0fVERDICT SUCCESS"
    assert pam_wire.frame("INFO é") == b"\x00\x00\x00\x07INFO \xc3\xa9"  # bytes, not chars


def test_frame_limits():
    assert len(pam_wire.frame("x" * pam_wire.MAX_FRAME)) == 4 + pam_wire.MAX_FRAME
    with pytest.raises(ProtocolError):
        pam_wire.frame("x" * (pam_wire.MAX_FRAME + 1))
    with pytest.raises(ProtocolError):
        pam_wire.frame("é" * (pam_wire.MAX_FRAME // 2 + 1))  # counted in bytes
    with pytest.raises(ProtocolError):
        pam_wire.frame("")


def test_frame_refuses_nul():
    with pytest.raises(ProtocolError, match="NUL"):
        pam_wire.frame("INFO a\0b")


@pytest.mark.parametrize("length, ok", [(0, False), (1, True), (pam_wire.MAX_FRAME, True),
                                        (pam_wire.MAX_FRAME + 1, False), (2**32 - 1, False)])
def test_check_length(length, ok):
    if ok:
        assert pam_wire.check_length(length) == length
    else:
        with pytest.raises(ProtocolError):
            pam_wire.check_length(length)


def test_decode():
    assert pam_wire.decode("ANSWER é".encode()) == "ANSWER é"
    with pytest.raises(ProtocolError, match="NUL"):
        pam_wire.decode(b"ANSWER a\0")
    for bad in (b"ANSWER \xff", b"ANSWER \xc3", b"ANSWER \xed\xa0\x80", b"\xc0\xaf"):
        with pytest.raises(ProtocolError, match="UTF-8"):
            pam_wire.decode(bad)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_decode_raises_only_protocol_errors(data):
    try:
        text = pam_wire.decode(data)
    except ProtocolError:
        return
    assert "\0" not in text


def test_parse_answer():
    assert pam_wire.parse_answer("ANSWER 123456") == "123456"
    assert pam_wire.parse_answer("ANSWER") == ""
    assert pam_wire.parse_answer("ANSWER  two  spaces ") == " two  spaces "
    for bad in ("ANSWERX", "answer 1", "HELLO JCTOTP/1", "PROMPT_OFF x", ""):
        with pytest.raises(ProtocolError):
            pam_wire.parse_answer(bad)


# --- daemon -> shim ------------------------------------------------------------

def payload(data: bytes) -> str:
    length = pam_wire.HEADER.unpack(data[:4])[0]
    assert length == len(data) - 4
    return data[4:].decode()


def test_encode_step():
    assert payload(pam_wire.encode_step(Prompt("Password: "))) == "PROMPT_OFF Password: "
    assert payload(pam_wire.encode_step(Prompt("Code: ", echo=True))) == "PROMPT_ON Code: "
    assert payload(pam_wire.encode_step(Info("two\nlines"))) == "INFO two\nlines"
    assert payload(pam_wire.encode_step(Error("no"))) == "ERROR no"
    for code in VERDICTS:
        assert payload(pam_wire.encode_step(Verdict(code))) == f"VERDICT {code}"
    assert payload(pam_wire.encode_step(Verdict("AUTH_ERR", delay=True))) == "VERDICT AUTH_ERR"


def test_encode_step_refuses_what_cannot_travel():
    with pytest.raises(ProtocolError):
        pam_wire.encode_step(Info("x" * pam_wire.MAX_FRAME))
    with pytest.raises(ProtocolError):
        pam_wire.encode_step(Error("a\0b"))
    with pytest.raises(ProtocolError):  # an explicit raise, not an assert (-O drops those)
        pam_wire.encode_step(Verdict("MAYBE"))  # type: ignore[arg-type]
