"""A type for values that must never print themselves: passwords, keys, codes."""

from __future__ import annotations

import hmac


class Secret:
    """Wraps a sensitive string; `repr`/`str` show `Secret(***)`, never the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself: call only where it is really used (hashing, crypto)."""
        return self._value

    def equals(self, other: str) -> bool:
        """Constant-time comparison with a plain string."""
        return hmac.compare_digest(self._value.encode(), other.encode())

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self.equals(other._value)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)
