"""TOTP (RFC 6238), plus recovery codes.

The code itself is RFC 4226's dynamic truncation over `hmac.digest`, with the
base32 key decoded ONCE per check (pyotp decodes it again for every candidate
step, a third of a login's TOTP cost). New secrets are what pyotp's
`random_base32(32)` makes (160 bits, base32, no padding), without importing
pyotp (1.5 MB of the daemon's RSS); tests/unit/test_totp.py holds our codes
to pyotp's (>= 2.6, Debian 12), the RFC vectors and oathtool. Codes are compared in constant time;
the replay guard (a step must be newer than the last accepted one) lives in
the store, as one atomic UPDATE. On a fleet the database checks codes itself
(store/pg_codecheck.py: the same rule in SQL, from these parameters; hosts never
read a key): tests/fleet/test_codecheck.py holds the two to each other.
"""

from __future__ import annotations

import base64
import hmac
import math
import secrets as _stdlib_secrets

from ..secret import Secret

RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i


class Totp:
    def __init__(self, digits: int = 6, period: int = 30, window: int = 1) -> None:
        self.digits = digits
        self.period = period
        self.window = window

    def step(self, now: float) -> int:
        """floor(now / period) in IEEE doubles: the fleet database's SQL computes
        exactly this expression (store/pg_codecheck.py), so both homes agree even
        a hair before a step's boundary; no step before the epoch."""
        return 0 if now < self.period else math.floor(now / self.period)

    def code(self, secret: Secret, step: int) -> str:
        return self._code(decode_key(secret), step)

    def _code(self, key: bytes, step: int) -> str:
        """RFC 4226 HOTP (SHA1) of `step`: dynamic truncation to `digits` digits."""
        mac = hmac.digest(key, step.to_bytes(8, "big"), "sha1")
        offset = mac[-1] & 0x0F
        value = int.from_bytes(mac[offset:offset + 4], "big") & 0x7FFFFFFF
        return str(value % 10 ** self.digits).zfill(self.digits)

    def match(self, secret: Secret, code: str, now: float) -> int | None:
        """The time-step the code belongs to within ±window, or None.

        Every candidate is computed and compared, so the time taken does not
        depend on which step (if any) matched.
        """
        canonical = self.canonical(code)
        if canonical is None:
            return None
        code, key = canonical, decode_key(secret)
        current = self.step(now)
        found = None
        for step in range(max(0, current - self.window), current + self.window + 1):
            if hmac.compare_digest(self._code(key, step), code) and found is None:
                found = step
        return found

    def canonical(self, code: str) -> str | None:
        """The code as checked (spaces dropped), or None when it cannot be one: the
        fleet database's check (store/pg_codecheck.py) gets exactly this."""
        code = code.strip().replace(" ", "")
        if len(code) != self.digits or not code.isascii() or not code.isdigit():
            return None
        return code

    @staticmethod
    def new_secret() -> Secret:
        # 160 bits, RFC 4226's recommendation: 32 base32 characters, no padding
        return Secret(base64.b32encode(_stdlib_secrets.token_bytes(20)).decode("ascii"))


def decode_key(secret: Secret) -> bytes:
    """The key bytes of a base32 secret, as pyotp reads it (padding optional, any case)."""
    text = secret.reveal()
    return base64.b32decode(text + "=" * (-len(text) % 8), casefold=True)


def looks_like_code(answer: str, digits: int) -> bool:
    text = answer.strip().replace(" ", "")
    return len(text) == digits and text.isascii() and text.isdigit()


def new_recovery_codes(count: int) -> list[str]:
    """Codes like `k7qx-m3vd-2pzh` (≈ 60 bits each), shown once, stored hashed."""
    def one() -> str:
        raw = "".join(_stdlib_secrets.choice(RECOVERY_ALPHABET) for _ in range(12))
        return "-".join(raw[i:i + 4] for i in range(0, 12, 4))
    return [one() for _ in range(count)]
