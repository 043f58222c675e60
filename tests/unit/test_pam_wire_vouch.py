"""HELLO acct_hint and VERDICT SUCCESS_ACCT_OK (issue 15, docs/protocol.md):
the daemon vouches for the account stage only to a shim that asked, only for
an auth call, and only for a success that says so (Verdict.account_ok)."""

from __future__ import annotations

import pytest

from pam_jctotp.core.steps import Verdict
from pam_jctotp.errors import ProtocolError
from pam_jctotp.model import VerdictCode
from pam_jctotp.transport import pam_wire

BASE = {"service": "sshd", "user": "alice", "rhost": "", "tty": "ssh",
        "factors": "totp"}


def hello(**fields: str) -> str:
    values = {**BASE, **fields}
    return pam_wire.VERSION_LINE + "\n" + "".join(f"{k}={v}\n" for k, v in values.items())


def payload(frame: bytes) -> str:
    return frame[pam_wire.HEADER.size:].decode()


def test_acct_hint_is_read_for_auth_only():
    assert pam_wire.parse_hello(hello(call="auth", acct_hint="1")).acct_hint
    assert not pam_wire.parse_hello(hello(call="auth")).acct_hint
    assert not pam_wire.parse_hello(hello(call="acct", acct_hint="1")).acct_hint


@pytest.mark.parametrize("value", ["", "0", "2", "yes", " 1"])
def test_acct_hint_takes_only_1(value):
    with pytest.raises(ProtocolError, match="acct_hint"):
        pam_wire.parse_hello(hello(call="auth", acct_hint=value))


def test_a_vouching_success_is_sent_as_success_acct_ok_when_asked():
    vouched = Verdict(VerdictCode.SUCCESS, account_ok=True)
    assert payload(pam_wire.encode_step(vouched, acct_hint=True)) == "VERDICT SUCCESS_ACCT_OK"
    assert payload(pam_wire.encode_step(vouched)) == "VERDICT SUCCESS"  # an older shim


@pytest.mark.parametrize("verdict", [
    Verdict(VerdictCode.SUCCESS),                       # an exemption, a skipped enrollment
    Verdict(VerdictCode.IGNORE, account_ok=True),       # only SUCCESS can vouch
    Verdict(VerdictCode.AUTH_ERR, account_ok=True),
])
def test_nothing_else_vouches(verdict):
    assert payload(pam_wire.encode_step(verdict, acct_hint=True)) == "VERDICT " + verdict.code
