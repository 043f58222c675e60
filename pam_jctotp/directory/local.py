"""The local directory: argon2id password hashes in the store's user table.

Hashing costs ~20 ms of CPU (and 19 MiB) by design, so the driver calls
verify_password/set_password in the bounded argon2 pool, never on the event loop.
"""

from __future__ import annotations

import base64
import os

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHash as InvalidHashError  # Debian 12: argon2-cffi 21.1
from argon2.exceptions import VerificationError, VerifyMismatchError
from argon2.low_level import ARGON2_VERSION

from ..config import PasswordHashParams
from ..errors import NotFound, StoreError
from ..secret import Secret
from ..store import Store
from . import SystemAccounts


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")   # argon2's encoding


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
        # password, so they cost the same time as a wrong password: a well-formed
        # hash with these parameters and random bytes (no password has it), made
        # without spending an argon2 hash at every start of jctotpd and its processes.
        self._dummy = (f"$argon2id$v={ARGON2_VERSION}$m={params.memory_kib},"
                       f"t={params.time_cost},p={params.parallelism}$"
                       f"{_b64(os.urandom(16))}${_b64(os.urandom(32))}")

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


class LocalDirectory:
    """The `Directory` of users kept in the store, groups from NSS."""

    editable = True
    provisions = False   # users are added with `jctotp user add`

    def __init__(self, store: Store, passwords: Passwords, system: SystemAccounts) -> None:
        self.store = store
        self.passwords = passwords
        self.system = system

    def verify_password(self, name: str | None, password: Secret) -> bool:
        rec = self.store.get(name) if name is not None else None
        return self.passwords.verify(rec.password_hash if rec else None, password)

    def set_password(self, name: str, password: Secret, old: Secret | None = None) -> None:
        if not self.store.update(name, password_hash=self.passwords.hash(password)):
            raise NotFound(f"no such user {name!r}")

    def identity(self, name: str) -> None:
        return None   # local users get the next free UID from useradd

    def exists(self, name: str) -> bool:
        return self.store.get(name) is not None

    def groups_of(self, name: str) -> frozenset[str]:
        return self.system.groups_of(name)

    def check(self, user: str | None = None) -> list[str]:
        try:
            self.store.list()
        except StoreError as exc:
            return [f"local directory: {exc}"]
        if user is not None and not self.exists(user):
            return [f"local directory: no user {user!r}"]
        return []

    def describe(self) -> str:
        return "local (argon2id passwords in the store)"
