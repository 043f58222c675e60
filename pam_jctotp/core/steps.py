"""The vocabulary of every conversation (PAM logins and CLI requests).

A conversation is a generator that yields these steps and is sent back what
each one produced. It never touches a socket or a clock of its own; the
transport's driver (or a unit test) runs it, one step at a time in a worker
thread, so the store and NSS calls a step makes never block the event loop:

    Prompt          -> the user's answer (str)
    Info / Error    -> None
    VerifyPassword  -> bool   (the directory checks it, in the argon2 pool)
    SetPassword     -> None   (the directory stores it, in the argon2 pool)
    Verdict/Result  -> ends the conversation

Rule: no store unit of work is open across a yield (store/sqlite.py raises
if one ends on another thread than it began).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from ..model import ExitCode, VerdictCode
from ..secret import Secret


@dataclass(frozen=True)
class Prompt:
    text: str
    echo: bool = False


@dataclass(frozen=True)
class Info:
    text: str


@dataclass(frozen=True)
class Error:
    text: str


@dataclass(frozen=True)
class VerifyPassword:
    """Ask the directory: is this `user`'s password? (None: an unknown user, same work)."""

    user: str | None
    password: Secret


@dataclass(frozen=True)
class SetPassword:
    user: str
    password: Secret
    old: Secret | None = None   # the user's own change: LDAP binds with it (RFC 3062)


@dataclass(frozen=True)
class Verdict:
    """The end of a PAM call; `delay` asks the server to hold a failure back.

    `account_ok` (with SUCCESS): the account stage would pass now too, so a
    shim that asked (HELLO acct_hint) may answer its account call itself."""

    code: VerdictCode
    delay: bool = False
    account_ok: bool = False


@dataclass(frozen=True)
class Result:
    """The end of a CLI request: an exit code, a sentence for people, data for --json."""

    exit: ExitCode = ExitCode.OK
    message: str = ""
    data: Any = field(default=None)
    delay: bool = False  # a failed proof of identity: held back like a failed login


Step = Prompt | Info | Error | VerifyPassword | SetPassword | Verdict | Result
Conversation = Generator[Step, Any, None]
# A sub-conversation that reports back whether it succeeded (e.g. a proof of identity).
Check = Generator[Step, Any, bool]
