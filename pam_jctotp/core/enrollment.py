"""The one enrollment sub-conversation: show the key, ask for a code, activate.

Used by the login (inside the enrollment period, Enter skips) and by
`jctotp setup` / `jctotp reset` (no skipping). The secret stays pending (or,
for a reset, lives only in the conversation) until a right code confirms it,
so leaving half-way never locks anyone out.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Generator

from ..secret import Secret
from .accounts import Accounts
from .steps import Error, Info, Prompt, Step

SKIP_PROMPT = "Enter the 6-digit code from your app to finish (Enter to skip): "
CONFIRM_PROMPT = "Enter the 6-digit code your app shows for the new key: "
RETRY_TEXT = "That code is not right. Check the time on your phone and try the current code."


class Outcome(Enum):
    ENROLLED = "enrolled"
    SKIPPED = "skipped"
    FAILED = "failed"       # enrollment_attempts wrong codes: nothing changed


def confirm(acc: Accounts, name: str, secret: Secret, *, intro: str = "",
            may_skip: bool = False) -> Generator[Step, Any, tuple[Outcome, list[str]]]:
    """Returns the outcome and, once ENROLLED, the new recovery codes (not yet shown)."""
    yield Info(intro + acc.enrollment_text(name, secret))
    attempts = acc.config.enrollment_attempts
    for attempt in range(attempts):
        answer = (yield Prompt(SKIP_PROMPT if may_skip else CONFIRM_PROMPT, echo=True)).strip()
        if not answer and may_skip:
            return Outcome.SKIPPED, []
        step = acc.totp.match(secret, answer, acc.now()) if answer else None
        if step is not None:
            return Outcome.ENROLLED, acc.activate(name, secret, step)
        if attempt + 1 < attempts:
            yield Error(RETRY_TEXT)
    return Outcome.FAILED, []
