"""The Linux side of a user: groups, uids, and the account itself (useradd).

Groups come from NSS initgroups (`os.getgrouplist`), the same call login
uses, so a group that sssd/LDAP knows but does not enumerate still counts;
never `grp.getgrall()`, which walks every group and misses those. Results
are cached for GROUP_TTL seconds: a login looks groups up twice or more.

sshd runs PAM for real only for users the system knows (getpwnam), so
`jctotp user add` creates the Linux account too unless told not to. Every
call here can block (NSS over the network, useradd up to 30 s): the daemon
makes them from worker threads, never from the event loop.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Callable

from ..errors import UsageError
from . import Identity

GROUP_TTL = 10.0  # seconds
# Debian's SYS_GID_MAX: groups below it are the system's (sudo, adm, docker, shadow …);
# 100 ("users") is the one a directory commonly shares as everyone's primary group.
SYSTEM_GID_MAX = 999
SHARED_GIDS = frozenset({100})


class NssAccounts:
    def __init__(self, ttl: float = GROUP_TTL,
                 monotonic: Callable[[], float] = time.monotonic,
                 protected_groups: frozenset[str] = frozenset()) -> None:
        self.ttl = ttl
        # local groups that grant something (break_glass_group, the sshd drop-in's
        # automation group): never a directory user's primary group by a GID collision
        self.protected_groups = protected_groups
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()
        # One account change at a time: the directory sync's thread and `jctotp user
        # add` may make the same account at once (useradd's "group exists", and the
        # cleanup of a half-made account must not remove the other's).
        self._changing = threading.Lock()

    def groups_of(self, name: str) -> frozenset[str]:
        """Names of the groups the user belongs to (empty if unknown), cached briefly."""
        now = self._monotonic()
        with self._lock:
            hit = self._cache.get(name)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        groups = lookup_groups(name)
        with self._lock:
            if len(self._cache) > 4096:  # bounded: names come from remote clients
                self._cache.clear()
            self._cache[name] = (now, groups)
        return groups

    def uid_to_name(self, uid: int) -> str | None:
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return None

    def exists(self, name: str) -> bool:
        try:
            pwd.getpwnam(name)
        except KeyError:
            return False
        return True

    def create_account(self, name: str, identity: Identity | None = None) -> bool:
        """useradd -m NAME (password locked: PAM is the gate). False if present. With the
        directory's `identity` the account takes its UID, GID, home and shell, so it is
        the same on every host; a UID another account has is refused, never renumbered."""
        with self._changing:
            return self._create(name, identity)

    def _create(self, name: str, identity: Identity | None) -> bool:
        if self.exists(name):
            return False
        args = ["--shell", "/bin/bash"]
        if identity is not None:
            taken = self.uid_to_name(identity.uid)
            if taken is not None:
                raise UsageError(f"UID {identity.uid} of directory user {name} is already "
                                 f"the local account {taken}'s; {name}'s account was not "
                                 "created (fix the clash, the UID is never changed)")
            self._group(name, identity.gid)
            args = ["--uid", str(identity.uid), "--gid", str(identity.gid),
                    "--shell", identity.shell or "/bin/bash"]
            if identity.home:
                args += ["--home-dir", identity.home]
        proc = subprocess.run(["useradd", "--create-home", *args, name],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            if self.exists(name):  # half-made (e.g. the home dir failed): leave nothing behind
                subprocess.run(["userdel", name], capture_output=True, timeout=30, check=False)
            raise UsageError(f"useradd {name} failed: {proc.stderr.strip()}")
        # A usable-but-unknown shadow password: sshd's PAM path needs the account
        # unlocked ("*" rather than "!") so that pubkey logins still run PAM.
        subprocess.run(["usermod", "-p", "*", name], capture_output=True, timeout=30,
                       check=False)
        return True

    def update_account(self, name: str, identity: Identity) -> list[str]:
        """usermod an account to the directory's identity (it changed there); the fields
        changed. A UID another account has is refused (UsageError), as at creation; the
        home is not moved (usermod --home without --move-home)."""
        with self._changing:
            return self._update(name, identity)

    def _update(self, name: str, identity: Identity) -> list[str]:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            return []
        args: list[str] = []
        if identity.uid != pw.pw_uid:
            taken = self.uid_to_name(identity.uid)
            if taken is not None:
                raise UsageError(f"UID {identity.uid} of directory user {name} is already "
                                 f"the local account {taken}'s; {name}'s account keeps UID "
                                 f"{pw.pw_uid} (fix the clash, the UID is never changed)")
            args += ["--uid", str(identity.uid)]
        if identity.gid != pw.pw_gid:
            self._group(name, identity.gid)
            args += ["--gid", str(identity.gid)]
        if identity.home and identity.home != pw.pw_dir:
            args += ["--home", identity.home]
        if identity.shell and identity.shell != pw.pw_shell:
            args += ["--shell", identity.shell]
        if not args:
            return []
        proc = subprocess.run(["usermod", *args, name], capture_output=True, text=True,
                              timeout=30)
        if proc.returncode != 0:
            raise UsageError(f"usermod {name} failed: {proc.stderr.strip()}")
        return args[::2]

    def _group(self, name: str, gid: int) -> None:
        """The directory's primary group: made (named after the user) when this host
        has no group with that GID, as JumpCloud's agent does. A GID that is a local
        system group's or a protected group's is refused like a UID clash: the primary
        group is a membership (initgroups), and a collision would silently make a
        directory user a member of sudo, break_glass_group or automation."""
        try:
            local = grp.getgrgid(gid)
        except KeyError:
            local = None
        if local is not None:
            if (local.gr_name in self.protected_groups
                    or (gid <= SYSTEM_GID_MAX and gid not in SHARED_GIDS)):
                raise UsageError(f"GID {gid} of directory user {name} is the local group "
                                 f"{local.gr_name}'s, which would make {name} a member of "
                                 f"it; {name}'s account was not changed (give the group "
                                 "another GID, the directory's is never changed)")
            return
        proc = subprocess.run(["groupadd", "--gid", str(gid), name], capture_output=True,
                              text=True, timeout=30)
        if proc.returncode != 0:
            raise UsageError(f"groupadd --gid {gid} {name} failed: {proc.stderr.strip()}")


def lookup_groups(name: str) -> frozenset[str]:
    """The user's groups by initgroups (primary group included), mapped to names."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return frozenset()
    try:
        gids = os.getgrouplist(name, pw.pw_gid)
    except OSError:
        gids = [pw.pw_gid]
    names = set()
    for gid in gids:
        # a gid without a name cannot match a configured group name
        with contextlib.suppress(KeyError):
            names.add(grp.getgrgid(gid).gr_name)
    return frozenset(names)


def group_members(group: str) -> list[str]:
    """The group's members as NSS knows them: listed in it, or with it as their
    primary group (for doctor: it reads every account once)."""
    try:
        gr = grp.getgrnam(group)
    except KeyError:
        return []
    names = set(gr.gr_mem)
    names.update(pw.pw_name for pw in pwd.getpwall() if pw.pw_gid == gr.gr_gid)
    return sorted(names)
