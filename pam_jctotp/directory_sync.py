"""Accounts ahead of the first login: the directory drives the host (issue 21).

sshd runs PAM for real only for a name getpwnam knows; a directory user whose
Linux account would be made by their first login failed that login. So one
thread reads the directory's users (LDAP, paged) at start and every
`directory_sync_interval` seconds, and for the members of `mfa_groups`,
`login_groups` and `admin_groups`:
- gives each an MFA record with group policy applied (core/provisioning.follow):
  one who joined `mfa_groups` since the last read must now enroll;
- with `accounts: daemon` (and `create_system_accounts`), makes their Linux
  account with the directory's uidNumber, gidNumber, homeDirectory and
  loginShell, follows changes of those, and locks and expires (usermod --lock
  --expiredate 1) the accounts it made whose user left the groups or the
  directory (fleet/accounts.py; a UID clash is refused with one log line);
- with `accounts: nss` (sssd or nslcd on the same directory) makes none:
  `doctor` checks that NSS sees a few of the members, with their UIDs.
`jctotp user list` shows users with a record who are no longer members as
`left` (gone from the directory) or `no login group`; the logins of those gone
from the directory are refused in acct_mgmt (provisioning.left_directory).

In a fleet, a record another host made for a name this host has not seen
(another host's sync saw a new member first, or `jctotp user add`) starts a read
at once (on_fleet_rows), so the account appears on every host within seconds;
other notifications (locks, codes, passwords) start none: a full read per lock
or login would load the directory. A change of the login groups themselves
(`jctotp policy set login_groups`, which every host takes from the fleet's
notification, or a reload) starts one too (config_changed): their new members
get accounts on every host within seconds.
"""

from __future__ import annotations

import logging
import pwd
import threading
from collections.abc import Iterable
from typing import Protocol

from .config import Config
from .core import provisioning
from .core.accounts import Accounts
from .directory import Identity
from .errors import DirectoryUnavailable, StoreError
from .fleet.accounts import SystemAccountSync
from .model import UserRecord

log = logging.getLogger("jctotpd.sync")

NSS_SAMPLE = 3   # members doctor looks up through NSS with `accounts: nss`


class Member(Protocol):
    groups: frozenset[str]
    identity: Identity | None


class Enumerable(Protocol):
    def members(self) -> dict[str, Member]: ...


class DirectorySync:
    def __init__(self, acc: Accounts, directory: Enumerable,
                 system_accounts: SystemAccountSync | None, interval: float) -> None:
        self.acc = acc
        self.directory = directory
        self.system_accounts = system_accounts
        self.interval = interval
        self.members: dict[str, Member] = {}
        self.groups: tuple[str, ...] | None = None   # the login groups of the last read
        self.error: str | None = None
        self.synced = threading.Event()   # set after each completed read (tests wait on it)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="directory-sync", daemon=True)

    def identity_of(self, name: str) -> Identity | None:
        member = self.members.get(name)
        return member.identity if member is not None else None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def sync_once(self) -> None:
        keys = self.acc.config.login_group_keys
        wanted = set(keys)
        everyone = self.directory.members()
        members = {n: m for n, m in everyone.items() if m.groups & wanted}
        self.members = members
        provisioning.follow(self.acc, {n: m.groups for n, m in members.items()})
        self.acc.departed = {r.name: "left" if r.name not in everyone else "no login group"
                             for r in self.acc.store.list() if r.name not in members}
        if self.system_accounts is not None:
            self.system_accounts.follow(set(members), update=True)
        self.groups = keys
        self.error = None
        self.synced.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except (DirectoryUnavailable, StoreError) as exc:
                # the directory and the store log their own outage once; keep the last
                # accounts as they are (an outage is not a reason to lock anyone)
                self.error = str(exc)
                log.debug("directory sync skipped: %s", exc)
            except Exception:  # noqa: BLE001 - the thread must outlive one bad read
                log.exception("directory sync failed")
            self._wake.wait(self.interval)
            self._wake.clear()

    def on_fleet_rows(self, rows: Iterable[UserRecord]) -> None:
        """A step of the fleet sync (fleet/sync.py): read now if the database has a
        record of a name the last read did not see (neither member nor departed)."""
        if not self.synced.is_set():
            return   # the first read is under way
        seen = self.members.keys() | self.acc.departed.keys()
        if any(r.name not in seen for r in rows):
            self._wake.set()

    def config_changed(self, new: Config) -> None:
        """A reload or the fleet's policy (daemon/build.swap): read now if the login
        groups are not those of the last read."""
        if new.login_group_keys != self.groups:
            self._wake.set()

    def findings(self) -> list[tuple[str, str]]:
        """For `jctotp doctor`: the last read, and with `accounts: nss` whether NSS sees
        the members (getpwnam of a few, with the directory's uidNumber)."""
        cfg = self.acc.config
        if self.error is not None:
            return [("warn", f"directory sync: the last read failed ({self.error}); the "
                     "accounts stay as they were")]
        if not self.synced.is_set():
            return [("warn", "directory sync: no read has completed yet")]
        found = [("ok", f"directory sync: {len(self.members)} member(s) of "
                  f"{', '.join(cfg.login_group_keys)} every "
                  f"{cfg.directory_sync_interval:g} s, accounts made by "
                  f"{'NSS (sssd/nslcd)' if cfg.accounts == 'nss' else 'jctotpd'}")]
        if cfg.accounts == "nss":
            found += nss_findings(dict(list(sorted(self.members.items()))[:NSS_SAMPLE]))
        return found


def nss_findings(sample: dict[str, Member]) -> list[tuple[str, str]]:
    """`accounts: nss`: sshd runs PAM only for names getpwnam knows."""
    if not sample:
        return [("warn", "accounts: nss: no member of the login groups to look up")]
    missing, wrong = [], []
    for name, member in sample.items():
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            missing.append(name)
            continue
        if member.identity is not None and pw.pw_uid != member.identity.uid:
            wrong.append(f"{name} (UID {pw.pw_uid}, the directory says "
                         f"{member.identity.uid})")
    found = []
    if missing:
        found.append(("fail", "accounts: nss: NSS does not know the directory user(s) "
                      f"{', '.join(missing)}: sshd will refuse their logins; configure sssd "
                      "or nslcd on the same directory (and 'passwd: files ldap' or 'sss' "
                      "in /etc/nsswitch.conf), or set accounts: daemon"))
    if wrong:
        found.append(("warn", f"accounts: nss: {', '.join(wrong)}: the NSS provider maps "
                      "UIDs differently from the directory's uidNumber"))
    if not found:
        found.append(("ok", f"accounts: nss: NSS sees the directory users "
                      f"{', '.join(sample)} with their directory UIDs"))
    return found
