"""The Linux side of a user: groups (for admin/exempt policy) and the account itself.

sshd runs PAM for real only for users the system knows (getpwnam), so
`jctotp user add` creates the Linux account too unless told not to.
"""

from __future__ import annotations

import grp
import pwd
import re
import subprocess

from .errors import UsageError

# POSIX-portable user names, as useradd accepts by default.
NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\$?$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(f"invalid user name {name!r}: use lower-case letters, digits, "
                         "'_' and '-', starting with a letter or '_' (at most 32)")
    return name


def groups_of(user: str) -> frozenset[str]:
    """Names of the system groups the user belongs to (empty if unknown)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return frozenset()
    names = {g.gr_name for g in grp.getgrall() if user in g.gr_mem}
    try:
        names.add(grp.getgrgid(pw.pw_gid).gr_name)
    except KeyError:
        pass
    return frozenset(names)


def uid_to_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def create_account(user: str) -> bool:
    """useradd -m NAME (shell /bin/bash, password locked: PAM is the gate). False if present."""
    if exists(user):
        return False
    proc = subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", user],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        if exists(user):  # half-made (e.g. the home dir failed): leave nothing behind
            subprocess.run(["userdel", user], capture_output=True, timeout=30, check=False)
        raise UsageError(f"useradd {user} failed: {proc.stderr.strip()}")
    # A usable-but-unknown shadow password: sshd's PAM path needs the account
    # unlocked ("*" rather than "!") so that pubkey logins still run PAM.
    subprocess.run(["usermod", "-p", "*", user], capture_output=True, timeout=30, check=False)
    return True
