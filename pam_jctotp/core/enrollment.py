"""The one enrollment sub-conversation: show the key, ask for a code, activate.

Used by the login (inside the enrollment period Enter skips; with "enroll
now" it does not) and by `jctotp setup` / `jctotp reset` (no skipping). The
secret stays pending (or, for a reset, lives only in the conversation) until
a right code confirms it, so leaving half-way never locks anyone out.

The recovery codes are shown and acknowledged BEFORE the activation commits:
a conversation cut between a right code and "Press Enter" (the client gone,
the daemon killed) leaves the user pending, never active with recovery codes
nobody saw. With `recovery_codes: 0` there is no block and nothing to press.
"""

from __future__ import annotations

from collections.abc import Generator
from enum import Enum
from typing import Any

from ..secret import Secret
from . import mfa_lifecycle
from .accounts import Accounts
from .mfa_lifecycle import StaleKey
from .steps import Error, Info, Prompt, Step

SKIP_PROMPT = "Enter the 6-digit code from your app to finish (Enter to skip): "
CONFIRM_PROMPT = "Enter the 6-digit code your app shows for the new key: "
ACK_PROMPT = "Press Enter when you have stored them: "
RETRY_TEXT = "That code is not right. Check the time on your phone and try the current code."
STALE_TEXT = "This key was withdrawn meanwhile (a password reset); log in again for a new one."


class Outcome(Enum):
    ENROLLED = "enrolled"
    SKIPPED = "skipped"
    FAILED = "failed"       # enrollment_attempts wrong codes: nothing changed
    STALE = "stale"         # the pending key was discarded meanwhile: nothing changed


def confirm(acc: Accounts, name: str, secret: Secret, *, intro: str = "",
            may_skip: bool = False, pending: bytes | None = None
            ) -> Generator[Step, Any, Outcome]:
    """`pending`: the stored pending key's ciphertext, which must still be there
    when the activation commits (see Accounts.activate)."""
    yield Info(intro + acc.enrollment_text(name, secret))
    attempts = acc.config.enrollment_attempts
    for attempt in range(attempts):
        answer = (yield Prompt(SKIP_PROMPT if may_skip else CONFIRM_PROMPT, echo=True)).strip()
        if not answer and may_skip:
            return Outcome.SKIPPED
        step = acc.totp.match(secret, answer, acc.now()) if answer else None
        if step is not None:
            codes = acc.recovery_codes()
            if codes:
                yield Info("That code is right.\n" + acc.recovery_text(codes))
                yield Prompt(ACK_PROMPT, echo=True)
            try:
                mfa_lifecycle.activate(acc, name, secret, step, codes, pending=pending)
            except StaleKey:
                yield Error(STALE_TEXT)
                return Outcome.STALE
            return Outcome.ENROLLED
        if attempt + 1 < attempts:
            yield Error(RETRY_TEXT)
    return Outcome.FAILED
