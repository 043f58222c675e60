"""Who the users are: one protocol, one module per kind of directory.

`local.py` is the argon2id password table in the store (LDAP next); `nss.py`
is the Linux side (groups through NSS initgroups, uids, useradd), which every
directory uses for groups. The core sees only these protocols.
"""

from __future__ import annotations

from typing import Protocol

from ..secret import Secret


class Directory(Protocol):
    editable: bool  # False: passwords are changed elsewhere (e.g. LDAP), set_password refuses

    def verify_password(self, name: str | None, password: Secret) -> bool:
        """True only for a known user and their password; the same work for anyone else."""
        ...

    def set_password(self, name: str, password: Secret) -> None:
        """Store a new password (argon2id for the local table); refused when not editable."""
        ...

    def exists(self, name: str) -> bool: ...

    def groups_of(self, name: str) -> frozenset[str]:
        """Names of the user's groups, as NSS initgroups sees them (empty if unknown)."""
        ...

    def check(self) -> list[str]:
        """Problems `jctotp doctor` should report (empty: all well)."""
        ...


class SystemAccounts(Protocol):
    """The Linux accounts (NSS and the shadow tools)."""

    def groups_of(self, name: str) -> frozenset[str]: ...
    def uid_to_name(self, uid: int) -> str | None: ...
    def exists(self, name: str) -> bool: ...
    def create_account(self, name: str) -> bool: ...
