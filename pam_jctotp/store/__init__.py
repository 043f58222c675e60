"""The state store: one protocol, one module per backend (sqlite.py, postgres.py).

Every counter that decides a login (failed attempts, the lock, the last
accepted TOTP step, single-use recovery codes) changes in ONE statement, so
concurrent logins, on one host or many, can never race past a limit.
`unit_of_work()` groups several changes on one connection; it is never held
across a conversation step. tests/unit/test_store_contract.py runs the same
contract against every backend, and the lockout subset (`Lockout`) against
the counters of names nobody has (unknown_names.py) too.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ..model import UserRecord

USER_COLUMNS = tuple(UserRecord.__dataclass_fields__)
SELECT_USERS = f"SELECT {', '.join(USER_COLUMNS)} FROM users"
_FLAGS = tuple(i for i, c in enumerate(USER_COLUMNS)
               if c in ("is_admin", "mfa_required", "enroll_now"))


def record(row: tuple[Any, ...]) -> UserRecord:
    """A users row (columns in USER_COLUMNS order) as a record; the 0/1 flags
    become real booleans (--json shows true/false), whatever the backend."""
    values = list(row)
    for i in _FLAGS:
        values[i] = bool(values[i])
    return UserRecord(*values)


class Lockout(Protocol):
    """The lockout subset: what core/lockout.py drives (reserve -> fail or succeed ->
    lock), for a user's row and for a name nobody has (unknown_names.py) alike.
    Single statements, no read-modify-write."""

    def get(self, name: str) -> UserRecord | None: ...
    def expire_lock(self, name: str, now: float, unlock_after: int) -> bool: ...
    def reserve_attempt(self, name: str, now: float, interval: int,
                        limit: int) -> int | None: ...
    def release_attempt(self, name: str) -> None: ...
    def lock_if_exhausted(self, name: str, now: float, limit: int, reason: str) -> bool: ...
    def reset_failures(self, name: str) -> None: ...
    def unlock(self, name: str) -> bool: ...


class Store(Lockout, Protocol):
    def close(self) -> None: ...

    def health(self) -> list[tuple[str, str]]:
        """(level, text) findings for `jctotp doctor`: level is ok | warn | fail."""
        ...

    def database_now(self, fresh: bool = False) -> float | None:
        """The shared database's clock (seconds since the epoch), which a fleet's
        locks and failure windows run on; None: this host's clock is the store's.
        `fresh`: read it now (a statement; doctor), not from the last reading."""
        ...

    def unit_of_work(self) -> AbstractContextManager[None]:
        """All-or-nothing, on one connection; re-entrant (an inner one joins)."""
        ...

    # users (get: in Lockout)
    def list(self) -> list[UserRecord]: ...
    def add(self, name: str, *, is_admin: bool, password_hash: str | None,
            now: float) -> None: ...
    def delete(self, name: str) -> bool: ...
    def update(self, name: str, **values: Any) -> bool: ...

    # lockout: the `Lockout` subset above

    # TOTP replay guard and recovery codes
    def accept_step(self, name: str, step: int, reset_failures: bool = False) -> bool:
        """Record `step` as used, False if it is not newer than the last (replay);
        with `reset_failures`, the failure counter starts over in the same statement
        (a login's success: one round trip, not two)."""
        ...
    def replace_recovery_codes(self, name: str, hashes: Iterable[str]) -> None: ...
    def use_recovery_code(self, name: str, code_hash: str, now: float) -> bool: ...
    def recovery_codes_left(self, name: str) -> int: ...
    def clear_recovery_codes(self, name: str) -> None: ...
