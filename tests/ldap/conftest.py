"""The directory tier (issue 14) runs against one private slapd per session.

Fixtures (tests/servers/slapd.py): slapd_server (session), slapd (per test, up);
here: the built shim (tests/conftest.py has `confdir`), and `ldap_daemon`, a
private jctotpd whose directory is that slapd.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from servers.slapd import slapd, slapd_server  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pam"))

import pamdriver  # noqa: E402
from testlib import ldap_directory  # noqa: E402


@pytest.fixture(scope="session")
def shim() -> str:
    return pamdriver.build_shim()


@pytest.fixture
def ldap_daemon(make_daemon, slapd, shim):  # noqa: F811
    """ldap_daemon(**config, directory={overrides}): a jctotpd checking passwords in slapd,
    admins = cn=admins, break-glass exempt, cn=mfa must use MFA."""

    def make(directory: dict[str, Any] | None = None, **config: Any):
        config.setdefault("admin_groups", ["admins"])
        config.setdefault("exempt_groups", ["break-glass"])
        config.setdefault("mfa_groups", ["mfa"])
        # no directory sync unless a test asks: it would make the slapd's users'
        # Linux accounts on this machine (tests/ldap/test_ldap_accounts.py asks)
        config.setdefault("directory_sync_interval", 0)
        return make_daemon(directory=ldap_directory(slapd, **(directory or {})), **config)

    return make
