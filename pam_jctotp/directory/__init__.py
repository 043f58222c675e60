"""Who the users are: one protocol, one module per kind of directory.

`local.py` is the argon2id password table in the store, `ldap.py` an LDAP
server (JumpCloud, OpenLDAP, ...) whose users appear by themselves; `nss.py`
is the Linux side (groups through NSS initgroups, uids, useradd), which every
directory uses for groups. The core sees only these protocols.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..secret import Secret


@dataclass(frozen=True)
class Identity:
    """A user's POSIX identity in the directory (LDAP uidNumber, gidNumber, ...): what
    the Linux account the daemon makes must carry, so it is the same on every host."""

    uid: int
    gid: int
    home: str | None = None
    shell: str | None = None


class Directory(Protocol):
    editable: bool  # False: passwords live elsewhere (LDAP): set_password asks it, it may refuse
    provisions: bool  # True: a user the directory knows gets an MFA record at first login

    def verify_password(self, name: str | None, password: Secret) -> bool:
        """True only for a known user and their password; the same work for anyone else."""
        ...

    def set_password(self, name: str, password: Secret, old: Secret | None = None) -> None:
        """Store a new password (argon2id for the local table; LDAP: RFC 3062 Password
        Modify, as the user with `old` or as the service account). PasswordChangeRefused
        says where to change it when the directory will not."""
        ...

    def exists(self, name: str) -> bool: ...

    def identity(self, name: str) -> Identity | None:
        """The user's directory UID, GID, home and shell (None: the directory has none)."""
        ...

    def groups_of(self, name: str) -> frozenset[str]:
        """Names of the user's groups, as NSS initgroups sees them (empty if unknown)."""
        ...

    def check(self, user: str | None = None) -> list[str]:
        """Problems `jctotp doctor` should report (empty: all well); `user`: must be found."""
        ...

    def describe(self) -> str:
        """One line for `jctotp doctor`: which directory this is."""
        ...


class SystemAccounts(Protocol):
    """The Linux accounts (NSS and the shadow tools)."""

    def groups_of(self, name: str) -> frozenset[str]: ...
    def uid_to_name(self, uid: int) -> str | None: ...
    def exists(self, name: str) -> bool: ...
    def create_account(self, name: str, identity: Identity | None = None) -> bool: ...
    def update_account(self, name: str, identity: Identity) -> list[str]: ...
