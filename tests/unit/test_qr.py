"""What a user scans: pam_jctotp/qr.py."""

from __future__ import annotations

import pyotp
import pytest
import segno

from pam_jctotp.core import qr
from pam_jctotp.core.totp import Totp
from pam_jctotp.secret import Secret

# The inverse of qr._HALF: a character -> (top dark, bottom dark).
DECODE = {char: pair for pair, char in qr._HALF.items()}


def modules(text: str) -> list[list[bool]]:
    """Read the half blocks back into rows of modules (True = dark)."""
    rows: list[list[bool]] = []
    for line in text.split("\n"):
        pairs = [DECODE[c] for c in line]
        rows.append([top for top, _ in pairs])
        rows.append([bottom for _, bottom in pairs])
    return rows


@pytest.mark.parametrize("data", ["x", "otpauth://totp/a?secret=JBSWY3DPEHPK3PXP",
                                  "otpauth://totp/" + "long%20label" * 20 + "?secret=A"])
@pytest.mark.parametrize("border", [0, 1, 2, 4])
def test_half_blocks_decode_to_segnos_matrix(data, border):
    text = qr.terminal_qr(data, border=border)
    expected = [[bool(m) for m in row]
                for row in segno.make(data, error="m", micro=False).matrix_iter(
                    scale=1, border=border)]
    got = modules(text)
    if len(expected) % 2:  # the last text line's lower half is a light padding row
        assert got[-1] == [False] * len(expected[0])
        got = got[:-1]
    assert got == expected
    width = len(expected[0])
    assert all(len(line) == width for line in text.split("\n"))


@pytest.mark.parametrize("data", ["x", "otpauth://totp/a?secret=JBSWY3DPEHPK3PXP",
                                  "otpauth://totp/" + "%C3%BC" * 150 + "?secret=A"])
@pytest.mark.parametrize("border", [0, 1, 2])
def test_the_size_bound_has_the_real_dimensions_and_is_never_below(data, border):
    """terminal_qr_bound (config validation's quick check, without choosing the mask):
    the same lines and width as the real text, each character counted as a block."""
    text = qr.terminal_qr(data, border=border)
    lines = text.split("\n")
    assert len(text.encode()) <= qr.terminal_qr_bound(data, border) \
        == len(lines) * (3 * len(lines[0]) + 1) - 1


def test_only_half_blocks_and_spaces():
    text = qr.terminal_qr("otpauth://totp/a?secret=JBSWY3DPEHPK3PXP")
    assert set(text) <= set(qr._HALF.values()) | {"\n"}
    assert not text.endswith("\n")


@pytest.mark.parametrize("issuer, account", [
    ("jctotp host1", "alice@host1"),
    ("ACME & Co; prod", "bob.smith@db-01.example.com"),
    ("Ünïcode Issuer", "zoë@host"),
    ("50%/off?#", "x@y"),
])
def test_otpauth_uri_parses_back(issuer, account):
    secret = Totp.new_secret()
    uri = qr.otpauth_uri(secret, account, issuer, 6, 30)
    assert uri.startswith("otpauth://totp/")
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    assert totp.secret == secret.reveal()
    assert totp.issuer == issuer
    assert totp.name == account
    assert (totp.digits, totp.interval) == (6, 30)
    assert " " not in uri and "\n" not in uri


def test_otpauth_uri_carries_digits_and_period():
    secret = Totp.new_secret()
    totp = pyotp.parse_uri(qr.otpauth_uri(secret, "a@h", "i", 8, 60))
    assert (totp.digits, totp.interval) == (8, 60)
    ours = Totp(digits=8, period=60)
    assert totp.at(1_700_000_000) == ours.code(secret, ours.step(1_700_000_000))


def test_grouped_key():
    secret = Secret("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    assert qr.grouped_key(secret) == "ABCD EFGH IJKL MNOP QRST UVWX YZ23 4567"
    assert qr.grouped_key(Secret("ABCDEF")) == "ABCD EF"
    fresh = Totp.new_secret()
    assert qr.grouped_key(fresh).replace(" ", "") == fresh.reveal()
