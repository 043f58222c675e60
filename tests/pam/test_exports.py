"""Only the pam_sm_* entry points may leak out of the shim."""

from __future__ import annotations

import subprocess

import pytest
from pamdriver import SHIM

pytestmark = pytest.mark.pam


def test_exports_exactly_the_pam_entry_points() -> None:
    out = subprocess.run(
        ["nm", "-D", "--defined-only", SHIM], check=True, capture_output=True, text=True
    ).stdout
    symbols = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert symbols == {"pam_sm_authenticate", "pam_sm_setcred", "pam_sm_acct_mgmt",
                       "pam_sm_chauthtok"}
