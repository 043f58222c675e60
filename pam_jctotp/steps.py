"""The vocabulary of every conversation (PAM logins and CLI requests).

A conversation is a generator that yields these steps and is sent back what
each one produced. It never touches a socket, a thread or a clock of its own;
the server (or a unit test) drives it:

    Prompt          -> the user's answer (str)
    Info / Error    -> None
    HashPassword    -> the argon2id hash (computed in a worker thread)
    VerifyPassword  -> bool              (computed in a worker thread)
    Verdict/Result  -> ends the conversation
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generator

from .secret import Secret


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
    stored_hash: str | None
    password: Secret


@dataclass(frozen=True)
class HashPassword:
    password: Secret


# PAM verdict codes, as on the wire (docs/protocol.md).
SUCCESS = "SUCCESS"
AUTH_ERR = "AUTH_ERR"
USER_UNKNOWN = "USER_UNKNOWN"
MAXTRIES = "MAXTRIES"
ACCT_EXPIRED = "ACCT_EXPIRED"
PERM_DENIED = "PERM_DENIED"
IGNORE = "IGNORE"
AUTHINFO_UNAVAIL = "AUTHINFO_UNAVAIL"
VERDICTS = (SUCCESS, AUTH_ERR, USER_UNKNOWN, MAXTRIES, ACCT_EXPIRED, PERM_DENIED, IGNORE,
            AUTHINFO_UNAVAIL)


@dataclass(frozen=True)
class Verdict:
    """The end of a PAM call; `delay` asks the server to hold a failure back."""

    code: str
    delay: bool = False


@dataclass(frozen=True)
class Result:
    """The end of a CLI request: an exit code, a sentence for people, data for --json."""

    exit: int = 0
    message: str = ""
    data: Any = field(default=None)
    delay: bool = False  # a failed proof of identity: held back like a failed login


Step = Prompt | Info | Error | VerifyPassword | HashPassword | Verdict | Result
Conversation = Generator[Step, Any, None]
# A sub-conversation that reports back whether it succeeded (e.g. a proof of identity).
Check = Generator[Step, Any, bool]
