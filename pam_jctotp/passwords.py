"""The local directory's password hashes: argon2id via argon2-cffi.

Hashing costs ~20 ms of CPU by design, so the daemon calls these from a
worker pool, never on the event loop.
"""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHash as InvalidHashError  # Debian 12: argon2-cffi 21.1
from argon2.exceptions import VerificationError, VerifyMismatchError

from .config import PasswordHashParams
from .secret import Secret


class Passwords:
    def __init__(self, params: PasswordHashParams) -> None:
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        # Verified instead of a real hash for unknown users and users with no
        # password, so they cost the same time as a wrong password.
        self._dummy = self._hasher.hash("jctotp timing equaliser")

    def hash(self, password: Secret) -> str:
        return self._hasher.hash(password.reveal())

    def verify(self, stored: str | None, password: Secret) -> bool:
        """True only for a real hash that matches; always spends one argon2 verify."""
        target = stored if stored else self._dummy
        try:
            ok: bool = self._hasher.verify(target, password.reveal())
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        return ok and bool(stored)
