"""TOTP (RFC 6238) and recovery codes: pam_jctotp/totp.py."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pam_jctotp.core.totp import RECOVERY_ALPHABET, Totp, looks_like_code, new_recovery_codes
from pam_jctotp.secret import Secret

RFC_SECRET = Secret(base64.b32encode(b"12345678901234567890").decode())

# RFC 6238 Appendix B, the SHA1 column.
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize("t, expected", RFC_VECTORS)
def test_rfc6238_sha1_vectors(t, expected):
    totp = Totp(digits=8)
    assert totp.code(RFC_SECRET, totp.step(t)) == expected
    assert totp.match(RFC_SECRET, expected, t) == totp.step(t)


@pytest.mark.skipif(shutil.which("oathtool") is None, reason="oathtool not installed")
@settings(max_examples=120, deadline=None)
@given(raw=st.binary(min_size=14, max_size=40), t=st.integers(60, 2**33))
def test_agrees_with_oathtool(raw, t):
    """oath-toolkit is an independent implementation of RFC 6238.

    (pyotp refuses secrets under 112 bits; ours are 160.)"""
    secret = base64.b32encode(raw).decode()
    out = subprocess.run(["oathtool", "--totp", "-b", "-d", "6", "-N", f"@{t}", secret],
                         capture_output=True, text=True, check=True).stdout.strip()
    totp = Totp()
    assert totp.code(Secret(secret), totp.step(t)) == out
    assert totp.match(Secret(secret), out, t) == totp.step(t)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(min_size=14, max_size=40), step=st.integers(0, 2**40),
       digits=st.integers(6, 8), lower=st.booleans(), unpadded=st.booleans())
def test_agrees_with_pyotp(raw, step, digits, lower, unpadded):
    """Our HOTP (key decoded once, hmac.digest) gives pyotp's code for every
    secret form pyotp reads: any case, with or without '=' padding."""
    import pyotp
    text = base64.b32encode(raw).decode()
    if unpadded:
        text = text.rstrip("=")
    if lower:
        text = text.lower()
    expected = pyotp.TOTP(text, digits=digits).generate_otp(step)
    assert Totp(digits=digits).code(Secret(text), step) == expected


def test_new_secret_is_160_bits_of_base32():
    secrets = {Totp.new_secret().reveal() for _ in range(50)}
    assert len(secrets) == 50
    for s in secrets:
        assert len(base64.b32decode(s)) == 20


@pytest.fixture
def secret() -> Secret:
    return Totp.new_secret()


T = 1_700_000_015  # the middle of a 30 s step


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_window_of_one_step_either_side_is_accepted(secret, offset):
    totp = Totp()
    code = totp.code(secret, totp.step(T) + offset)
    assert totp.match(secret, code, T) == totp.step(T) + offset


@pytest.mark.parametrize("offset", [-2, 2, -3, 3])
def test_two_steps_away_is_refused(secret, offset):
    totp = Totp()
    code = totp.code(secret, totp.step(T) + offset)
    window = {totp.code(secret, totp.step(T) + d) for d in (-1, 0, 1)}
    if code in window:  # a 1-in-10^6 collision with a code of the window
        pytest.skip("collision")
    assert totp.match(secret, code, T) is None


def test_window_zero_accepts_only_the_current_step(secret):
    totp = Totp(window=0)
    now = totp.step(T)
    assert totp.match(secret, totp.code(secret, now), T) == now
    if totp.code(secret, now + 1) != totp.code(secret, now):
        assert totp.match(secret, totp.code(secret, now + 1), T) is None


def test_spaces_around_and_inside_a_code_are_tolerated(secret):
    totp = Totp()
    code = totp.code(secret, totp.step(T))
    assert totp.match(secret, f" {code[:3]} {code[3:]}\n", T) == totp.step(T)


@pytest.mark.parametrize("mangle", [
    lambda c: c[:-1],                     # too short
    lambda c: c + "0",                    # too long
    lambda c: "a" + c[1:],                # a letter
    lambda c: c[:5] + "x",
    lambda c: "-" + c[1:],
    lambda c: "\u0661" + c[1:],           # ARABIC-INDIC DIGIT ONE: isdigit(), not ASCII
    lambda c: "\uff11" + c[1:],           # FULLWIDTH DIGIT ONE
    lambda c: "",
])
def test_malformed_codes_are_refused(secret, mangle):
    totp = Totp()
    code = totp.code(secret, totp.step(T))
    assert totp.match(secret, mangle(code), T) is None


def test_looks_like_code():
    assert looks_like_code("123456", 6)
    assert looks_like_code(" 123 456 ", 6)
    assert not looks_like_code("12345", 6)
    assert not looks_like_code("12345a", 6)
    assert not looks_like_code("\u0661" * 6, 6)
    assert looks_like_code("12345678", 8)


def test_recovery_codes_format_and_uniqueness():
    codes = new_recovery_codes(2000)
    pattern = re.compile(rf"^[{RECOVERY_ALPHABET}]{{4}}(-[{RECOVERY_ALPHABET}]{{4}}){{2}}$")
    assert all(pattern.match(c) for c in codes), [c for c in codes if not pattern.match(c)][:3]
    assert len(set(codes)) == len(codes)
    assert not set("01ilo") & set("".join(codes))  # nothing to misread
    assert new_recovery_codes(0) == []


def test_recovery_codes_are_never_mistaken_for_a_totp_code():
    assert not any(looks_like_code(c, d) for c in new_recovery_codes(50) for d in (6, 7, 8))


def test_a_code_missing_its_leading_zero_is_refused(secret):
    """Issue 9's planted bug: `12345` zero-padded to `012345` and accepted."""
    totp = Totp()
    step = next(s for s in range(totp.step(T), totp.step(T) + 10_000)
                if totp.code(secret, s).startswith("0"))
    now = step * totp.period + 1
    code = totp.code(secret, step)
    assert totp.match(secret, code, now) == step  # the full code is right...
    for short in (code[1:], " " + code[1:], code[1:] + " "):
        assert totp.match(secret, short, now) is None  # ...five digits of it never are
