"""A way in while the directory is down (issue 21), as SSSD's cached credentials.

A directory outage (LDAP down or unreachable: DirectoryUnavailable, never a wrong
password) fails every login closed, on every host at once. For the members of ONE
local group (`break_glass_group`, checked through NSS on this host, as for a
database outage: fleet/breakglass.py), each host keeps a verifier of their
directory password: an argon2id hash (password_hash's parameters: OWASP's minimum,
19 MiB t=2 p=1, or stronger), written after each successful LDAP password check,
one file per member in state_dir/break-glass-passwords/ (0700 directory, 0600
files, root only). While the directory is unreachable, and only then:
- a member's password is checked against that verifier (a wrong one is a wrong
  password: refused and counted like any other); the code is still asked and
  checked by the store as always (with the database down too, from the break-glass
  copy of their secret);
- a verifier older than `break_glass_password_max_age` serves nobody (one ERROR line per
  user per minute, `break_glass_refused` audited), as the copy of secrets;
- everyone else fails closed as before.
A member who logs in with key + code gives no password to hash: `jctotp doctor`
names the members with no verifier (or one past its age) on this host, and
`jctotp break-glass` (the member, or root for them) asks the directory password,
checks it against the directory (a wrong one counts as a failed login) and writes
the verifier (break_glass_state, break_glass_findings).
While the directory answers, the verifier is never read: a password the directory
refuses is wrong, whatever the verifier says. A member who left the group loses
their verifier at their next login, and is refused at once (membership is checked
at each use).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DirectoryUnavailable
from ..secret import Secret
from . import Directory, SystemAccounts
from .local import Passwords
from .nss import group_members

log = logging.getLogger("jctotpd.breakglass")

FOLDER = "break-glass-passwords"   # in state_dir
WARN_EVERY = 60.0   # one log line per user per minute of an outage (as breakglass.py)


class Verifiers:
    """The members' password verifiers: one small JSON file each, replaced atomically
    (jctotpd and its PAM processes share them)."""

    def __init__(self, folder: Path, passwords: Passwords,
                 wall: Callable[[], float] = time.time) -> None:
        self.folder = folder
        self.passwords = passwords
        self._wall = wall

    def _path(self, name: str) -> Path | None:
        if not name or "/" in name or name.startswith(".") or len(name) > 64:
            return None
        return self.folder / name

    def remember(self, name: str, password: Secret) -> None:
        path = self._path(name)
        if path is None:
            return
        record = {"hash": self.passwords.hash(password), "at": self._wall()}
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            tmp = path.with_name(f".{name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh)
            os.replace(tmp, path)
        except OSError as exc:
            log.error("break-glass: cannot keep the password verifier of %s in %s: %s",
                      name, self.folder, exc)

    def forget(self, name: str) -> None:
        path = self._path(name)
        if path is not None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("break-glass: cannot remove %s: %s", path, exc)

    def age(self, name: str) -> tuple[str, float] | None:
        """(hash, seconds since it was written), or None: no usable verifier."""
        found = self._read(name)
        return None if found is None else (found[0], self._wall() - found[1])

    def written(self, name: str) -> float | None:
        """When the verifier was written (this clock's time), or None: none usable."""
        found = self._read(name)
        return None if found is None else found[1]

    def now(self) -> float:
        return self._wall()

    def _read(self, name: str) -> tuple[str, float] | None:
        path = self._path(name)
        if path is None:
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            return str(record["hash"]), float(record["at"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.error("break-glass: unreadable verifier %s: %s", path, exc)
            return None

    def check(self, stored: str, password: Secret) -> bool:
        return self.passwords.verify(stored, password)


class OfflineDirectory:
    """The LDAP directory, and break_glass_group's verifiers for when it is down."""

    def __init__(self, inner: Directory, verifiers: Verifiers, system: SystemAccounts,
                 group: str, max_age: Callable[[], float],
                 audit: Callable[..., Any] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 members_of: Callable[[str], list[str]] = group_members) -> None:
        self.inner = inner
        self.members_of = members_of   # the group's members on this host (doctor)
        self.verifiers = verifiers
        self.system = system
        self.group = group
        self.max_age = max_age          # break_glass_password_max_age, read at each use
        self._audit = audit
        self._clock = clock
        self._said: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def __getattr__(self, attr: str) -> Any:   # everything else: the directory itself
        return getattr(self.inner, attr)

    def _member(self, name: str | None) -> bool:
        return name is not None and self.group in self.system.groups_of(name)

    def _once(self, kind: str, name: str) -> bool:
        now = self._clock()
        with self._lock:
            last = self._said.get((kind, name))
            if last is not None and now - last < WARN_EVERY:
                return False
            self._said[(kind, name)] = now
            return True

    def _verifier(self, name: str | None, exc: DirectoryUnavailable,
                  audit: bool = False) -> str:
        """The member's fresh verifier during an outage; else `exc` again (fail closed)."""
        if name is None or not self._member(name):
            raise exc
        found = self.verifiers.age(name)
        if found is None:
            raise exc
        stored, age = found
        if age > self.max_age():
            if self._once("old", name):
                log.error("break-glass: refused %s: the directory is unavailable and this "
                          "host's verifier of their password was written %.0f s ago, more "
                          "than break_glass_password_max_age (%g s)", name, age, self.max_age())
            if audit and self._audit is not None:
                self._audit("break_glass_refused", name, reason=f"directory unavailable; "
                            f"password verifier {age:.0f} s old (break_glass_password_max_age "
                            f"{self.max_age():g} s)")
            raise exc
        return stored

    # --- the Directory protocol, with the fallback ---------------------------------

    def verify_password(self, name: str | None, password: Secret) -> bool:
        try:
            ok = self.inner.verify_password(name, password)
        except DirectoryUnavailable as exc:
            stored = self._verifier(name, exc, audit=True)
            assert name is not None
            ok = self.verifiers.check(stored, password)
            if self._once("used", name):
                log.warning("break-glass: the password of %s is checked against this host's "
                            "verifier (directory unavailable)", name)
            if self._audit is not None:
                self._audit("break_glass_offline", name, reason="directory unavailable",
                            outcome="password ok" if ok else "wrong password")
            return ok
        if self._said:
            with self._lock:
                self._said.clear()   # the directory answers: the next outage says afresh
        if ok and name is not None:
            if self._member(name):
                self.verifiers.remember(name, password)
            else:
                self.verifiers.forget(name)
        return ok

    def exists(self, name: str) -> bool:
        try:
            return self.inner.exists(name)
        except DirectoryUnavailable as exc:
            self._verifier(name, exc)
            return True

    def groups_of(self, name: str) -> frozenset[str]:
        try:
            return self.inner.groups_of(name)
        except DirectoryUnavailable as exc:
            self._verifier(name, exc)
            return self.system.groups_of(name)   # this host's groups (NSS) only

    # --- `jctotp break-glass` and `jctotp doctor` ----------------------------------

    def break_glass_state(self, name: str) -> tuple[bool, float | None]:
        """(in break_glass_group on this host, when this host's verifier of their
        password was written: None if there is none)."""
        return self._member(name), self.verifiers.written(name)

    def break_glass_findings(self) -> list[tuple[str, str]]:
        """The members this host would refuse during a directory outage: no verifier
        (never a password login here, e.g. key + code only), or one past its age."""
        try:
            names = [n for n in sorted(self.members_of(self.group)) if self.inner.exists(n)]
        except DirectoryUnavailable:   # the directory's own finding says so; name them all
            names = sorted(self.members_of(self.group))
        if not names:
            return [("warn", f"break_glass_group {self.group}: no directory user in it on "
                     "this host: nobody can log in here while the directory is down")]
        now, limit = self.verifiers.now(), self.max_age()
        missing, old = [], []
        for name in names:
            at = self.verifiers.written(name)
            if at is None:
                missing.append(name)
            elif now - at > limit:
                old.append(f"{name} ({(now - at) / 3600:.1f} h old)")
        found = []
        how = ("`jctotp break-glass` run by the member (or `jctotp break-glass NAME` as "
               "root) asks the directory password and writes one")
        if missing:
            found.append(("warn", f"break-glass: no verifier of the directory password of "
                          f"{', '.join(missing)} on this host (no password login here: key "
                          f"+ code writes none): refused here while the directory is down; "
                          f"{how}"))
        if old:
            found.append(("warn", f"break-glass: the password verifier of {', '.join(old)} "
                          f"is older than break_glass_password_max_age ({limit:g} s): refused here "
                          f"while the directory is down until a password login or {how}"))
        if not found:
            found.append(("ok", f"break-glass: {len(names)} member(s) of {self.group} have a "
                          "password verifier on this host for a directory outage"))
        return found
