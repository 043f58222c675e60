"""Linux accounts follow the fleet's directory (`create_system_accounts: true`).

sshd runs PAM only for users getpwnam knows, so every host needs an account for
every directory user. This host's daemon creates the missing ones (useradd, as
`jctotp user add` does) and records each name it made in
state_dir/system-accounts (0600): only those are ever touched again. An account
we made whose user left the directory is locked (password locked and expired,
so no key login either), and unlocked if the user comes back. Accounts made
by anyone else are never changed.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ..directory import Identity
from ..directory.nss import NssAccounts
from ..errors import JctotpError
from ..model import UserRecord

log = logging.getLogger("jctotpd.accounts")
T = TypeVar("T")


class SystemAccountSync:
    def __init__(self, system: NssAccounts, registry: Path,
                 identity_of: Callable[[str], Identity | None] = lambda name: None) -> None:
        self.system = system
        self.registry = registry
        self.identity_of = identity_of   # the directory's UID, GID, home, shell
        self._refused: dict[str, str] = {}   # name -> why: logged once, not every resync

    def ours(self) -> dict[str, bool]:
        """name -> locked, for the accounts this host's daemon made."""
        try:
            lines = self.registry.read_text().split()
        except FileNotFoundError:
            return {}
        return {line.split(":")[0]: line.endswith(":locked") for line in lines}

    def _save(self, ours: dict[str, bool]) -> None:
        tmp = self.registry.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{n}{':locked' if locked else ''}\n"
                             for n, locked in sorted(ours.items())))
        os.replace(tmp, self.registry)

    def __call__(self, rows: Iterable[UserRecord]) -> None:
        self.follow({r.name for r in rows})

    def follow(self, names: set[str], update: bool = False) -> None:
        """Accounts for `names` (made, or unlocked if they come back), and locked for
        the names we made that are not among them. `update`: an account we made takes
        the directory's identity again when it changed there (the directory sync)."""
        ours = self.ours()
        before = dict(ours)
        for name in sorted(names):
            if name in ours:
                if ours[name]:
                    self._usermod(name, "--expiredate", "", "--unlock")
                    ours[name] = False
                    log.info("system account %s unlocked: back in the directory", name)
                if update:
                    self._update(name)
            elif not self.system.exists(name) and self._attempt(
                    name, "create", self.system.create_account, name,
                    self.identity_of(name)) is not None:
                ours[name] = False
                log.info("system account %s created (a directory user)", name)
        for name, locked in ours.items():
            if name not in names and not locked and self.system.exists(name):
                self._usermod(name, "--lock", "--expiredate", "1")
                ours[name] = True
                log.info("system account %s locked: no longer in the directory", name)
        if ours != before:
            self._save(ours)

    def _update(self, name: str) -> None:
        identity = self.identity_of(name)
        if identity is None:
            return
        changed = self._attempt(name, "update", self.system.update_account, name, identity)
        if changed:
            log.info("system account %s updated from the directory (%s)", name,
                     ", ".join(c.lstrip("-") for c in changed))

    def _attempt(self, name: str, what: str, fn: Callable[..., T], *args: Any) -> T | None:
        """fn(*args); None if refused (a UID clash), logged once, not at every resync."""
        try:
            result = fn(*args)
        except JctotpError as exc:
            if self._refused.get(name) != str(exc):
                log.error("cannot %s the system account of %s: %s", what, name, exc)
                self._refused[name] = str(exc)
            return None
        self._refused.pop(name, None)
        return result

    @staticmethod
    def _usermod(name: str, *args: str) -> None:
        proc = subprocess.run(["usermod", *args, name], capture_output=True, text=True,
                              timeout=30)
        if proc.returncode != 0:
            log.error("usermod %s %s: %s", " ".join(args), name, proc.stderr.strip())
