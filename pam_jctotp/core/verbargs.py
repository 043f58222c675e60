"""Checking what a control request carries: typed arguments, names, passwords."""

from __future__ import annotations

from typing import Any

from ..errors import NotFound, UsageError
from ..model import UserRecord
from ..secret import Secret
from .accounts import Accounts

MIN_PASSWORD = 8


def arg(args: dict[str, Any], key: str, kind: type, default: Any = ...) -> Any:
    if key not in args or args[key] is None:
        if default is ...:
            raise UsageError(f"missing argument {key!r}")
        return default
    value = args[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise UsageError(f"argument {key!r} must be {kind.__name__}")
    return value


def days(args: dict[str, Any], default: int | None) -> int:
    value = arg(args, "enrollment_days", int, default)
    if value is None or not 1 <= value <= 365:
        raise UsageError(f"--enrollment-days must be between 1 and 365 (got {value}); "
                         "for no enrollment period at all use --enroll-now")
    return int(value)


def period(args: dict[str, Any], default: int) -> tuple[int | None, bool]:
    """The enrollment period asked for: (days, or None for --enroll-now; whether the
    caller said so explicitly, as opposed to the config's default)."""
    enroll_now = arg(args, "enroll_now", bool, False)
    explicit = args.get("enrollment_days") is not None
    if enroll_now and explicit:
        raise UsageError("--enroll-now and --enrollment-days exclude each other")
    if enroll_now:
        return None, True
    return days(args, default), explicit


def users(acc: Accounts, args: dict[str, Any]) -> list[UserRecord]:
    """Every named user, or an error before anything changes."""
    names = arg(args, "names", list)
    if not names:
        raise UsageError("name at least one user")
    records = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise UsageError("user names must not be empty")
        rec = acc.get(name)
        if rec is None:
            raise NotFound(f"no such user {name!r} (nothing was changed)")
        records.append(rec)
    return records


def user(acc: Accounts, name: Any) -> UserRecord:
    if not isinstance(name, str) or not name:
        raise UsageError("name a user")
    rec = acc.get(name)
    if rec is None:
        raise NotFound(f"no such user {name!r}")
    return rec


def new_password(args: dict[str, Any]) -> Secret:
    password = arg(args, "password", str)
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"passwords need at least {MIN_PASSWORD} characters")
    if "\n" in password or "\0" in password:
        raise UsageError("passwords must not contain newlines or NUL")
    return Secret(password)
