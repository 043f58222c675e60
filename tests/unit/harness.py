"""Sans-I/O harness for the unit tier: real Accounts, no sockets, no threads.

`drive()` runs a conversation (a login or a control verb) the way the server
does, but synchronously: prompts are answered from a list (or a callable),
argon2 runs inline. `World` builds the daemon's long-lived pieces in a temp
dir and adds users straight into the store.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp

from pam_jctotp import config as configmod
from pam_jctotp.audit import AuditLog
from pam_jctotp.clock import Clock
from pam_jctotp.core.accounts import Accounts
from pam_jctotp.core.steps import (
    Conversation,
    Error,
    Info,
    Prompt,
    Result,
    SetPassword,
    Verdict,
    VerifyPassword,
)
from pam_jctotp.core.totp import Totp
from pam_jctotp.crypto import SecretBox
from pam_jctotp.directory import Directory
from pam_jctotp.directory.local import LocalDirectory, Passwords
from pam_jctotp.directory.nss import NssAccounts
from pam_jctotp.secret import Secret
from pam_jctotp.store.sqlite import SqliteStore
from pam_jctotp.transport.perform import perform

PASSWORD = "correct horse battery"
# One argon2 instance for the whole tier, at 1 MiB and one pass (below OWASP's floor,
# which only config validation enforces): these tests are about what is verified, not
# its cost, which is ~30 ms a hash or verify by design (test_local_passwords keeps the
# production parameters; the daemons of tests/pam have testing.fast_password_hash).
PASSWORDS = Passwords(configmod.PasswordHashParams(memory_kib=1024, time_cost=1))

Answers = Sequence[str] | Callable[[Prompt, list[Any]], str]


@dataclass
class Run:
    """Everything a conversation yielded, and how it ended."""

    steps: list[Any]
    end: Verdict | Result

    @property
    def code(self) -> str:
        assert isinstance(self.end, Verdict)
        return self.end.code

    @property
    def prompts(self) -> list[str]:
        return [s.text for s in self.steps if isinstance(s, Prompt)]

    @property
    def shown(self) -> list[tuple[str, str]]:
        """What the user sees, in order: (kind, text) of prompts, infos, errors."""
        kinds = {Prompt: "prompt", Info: "info", Error: "error"}
        return [(kinds[type(s)], s.text) for s in self.steps if type(s) in kinds]

    @property
    def verifies(self) -> int:
        return sum(isinstance(s, VerifyPassword) for s in self.steps)

    def text(self) -> str:
        return "\n".join(t for _, t in self.shown)


class _Sync:
    """perform.StepIO for the unit tier: prompts answered from a list (or a callable),
    argon2 inline; each method returns what the conversation is sent back."""

    def __init__(self, answers: Answers, directory: Directory | None) -> None:
        self.answers = answers
        self.queue = None if callable(answers) else list(answers)
        self.directory = directory

    def prompt(self, steps: list[Any], step: Prompt) -> Any:
        if self.queue is None:
            return self.answers(step, steps)  # type: ignore[operator]
        assert self.queue, f"unexpected prompt {step.text!r} after {steps!r}"
        return self.queue.pop(0)

    def show(self, steps: list[Any], step: Info | Error) -> Any:
        return None

    def _directory(self) -> Directory:
        assert self.directory is not None, \
            "drive(..., directory=world.directory) checks passwords"
        return self.directory

    def verify(self, steps: list[Any], step: VerifyPassword) -> Any:
        return self._directory().verify_password(step.user, step.password)

    def set_password(self, steps: list[Any], step: SetPassword) -> Any:
        self._directory().set_password(step.user, step.password, step.old)
        return None

    def end(self, steps: list[Any], step: Verdict | Result) -> Any:
        assert not self.queue, f"answers never asked for: {self.queue!r}"
        return _END


_END = object()


def drive(conv: Conversation, answers: Answers = (), directory: Directory | None = None,
          delivered: bool = True) -> Run:
    """Run `conv` to its Verdict/Result through the server's own step dispatch
    (transport/perform.py); every answer in a list must be asked for. Then, as the
    server does, tell it whether the verdict reached the peer."""
    io = _Sync(answers, directory)
    steps: list[Any] = []
    value: Any = None
    try:
        while True:
            step = conv.send(value)
            steps.append(step)
            value = perform(step, io, steps)
            if value is _END:
                try:
                    after = conv.send(delivered)
                except StopIteration:
                    return Run(steps, step)
                raise AssertionError(f"the conversation went on after its verdict: {after!r}")
    except StopIteration:
        raise AssertionError(f"conversation ended without a verdict after {steps!r}") from None
    finally:
        conv.close()


@functools.cache
def _hash(password: str) -> str:
    """One argon2 hash per distinct password: the users of a test may share it."""
    return PASSWORDS.hash(Secret(password))


def mid_step(t: float, period: int = 30) -> float:
    """The middle of t's time-step: a few seconds of drift never cross a boundary."""
    return (t // period) * period + period / 2


class FakeSystem(NssAccounts):
    """The Linux side, without NSS groups or useradd: groups from the test's table,
    uids from the real passwd database."""

    def __init__(self, groups: dict[str, frozenset[str]]) -> None:
        super().__init__()
        self.groups = groups
        self.created: list[str] = []

    def groups_of(self, name: str) -> frozenset[str]:
        return self.groups.get(name, frozenset())

    def exists(self, name: str) -> bool:
        return name in self.created

    def create_account(self, name: str, identity=None) -> bool:
        self.created.append(name)
        return True


@dataclass
class World:
    """A daemon's pieces in `tmp`: config, store, key, clock, audit log."""

    tmp: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        raw = {"state_dir": str(self.tmp / "state"), "audit_log": str(self.tmp / "audit.jsonl"),
               "audit_syslog": False, "create_system_accounts": False, "fail_delay": 0}
        raw.update(self.overrides)
        self.config = configmod.parse(raw, daemon=False)
        os.makedirs(self.config.state_dir, mode=0o700, exist_ok=True)
        self.store = SqliteStore(self.config.db_path)
        self.box = SecretBox(os.urandom(32))
        self.clock = Clock(controllable=True)
        self.audit = AuditLog(self.config.audit_log, use_syslog=False)
        self.system = FakeSystem(self.groups)
        self.directory = LocalDirectory(self.store, PASSWORDS, self.system)
        self.acc = Accounts(self.config, self.store, self.directory, self.system, self.box,
                            self.clock, self.audit)
        self.set_time(mid_step(time.time()))

    def close(self) -> None:
        self.store.close()
        self.audit.close()

    # --- time ----------------------------------------------------------------

    def set_time(self, t: float) -> None:
        """Make the daemon's clock read `t` now (it keeps ticking from there)."""
        self.clock.set_offset(t - time.time())

    def advance(self, seconds: float) -> None:
        self.clock.set_offset(self.clock.offset + seconds)

    def now(self) -> float:
        return self.acc.now()

    # --- users ---------------------------------------------------------------

    def add(self, name: str, *, password: str | None = PASSWORD, admin: bool = False,
            mfa: str = "active", days: int = 7,
            max_attempts: int | None = None) -> pyotp.TOTP | None:
        """A directory user; mfa: "off" | "pending" | "expired" | "active".

        Returns the phone's view of an active user's secret."""
        pw_hash = None if password is None else _hash(password)
        self.store.add(name, is_admin=admin, password_hash=pw_hash, now=self.now())
        if max_attempts is not None:
            self.store.update(name, max_attempts=max_attempts)
        if mfa == "active":
            secret = Totp.new_secret()
            self.codes = self.acc.activate(name, secret, None)
            self.store.update(name, mfa_required=1)
            return pyotp.TOTP(secret.reveal())
        if mfa in ("pending", "expired"):
            self.acc.start_enrollment(name, days)
            if mfa == "expired":
                self.store.update(name, enroll_deadline=self.now() - 1)
        else:
            assert mfa == "off", mfa
        return None

    def code(self, totp: pyotp.TOTP, offset: float = 0) -> str:
        """The code the phone shows at the daemon's time (+offset seconds)."""
        return totp.at(self.now() + offset)

    def wrong(self, totp: pyotp.TOTP) -> str:
        """A well-formed code that matches no step of the window."""
        window = {totp.at(self.now() + d) for d in (-30, 0, 30)}
        return next(c for c in ("000000", "111111", "222222", "333333") if c not in window)

    def audit_events(self) -> list[str]:
        path = Path(self.config.audit_log)
        if not path.exists():
            return []
        return [json.loads(line)["event"] for line in path.read_text().splitlines()]


class Mails:
    """An outbox (core/portal_state.Outbox) that keeps what it was given."""

    enabled = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def send(self, template: str, to: str, **fields: object) -> None:
        self.sent.append((template, to, fields))
