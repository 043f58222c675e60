"""Issue 21: group policy is applied at every login (core/provisioning.apply_groups),
but never at the cost of break-glass: during a database outage the record cannot be
written, and a break-glass member still gets in from the host's copy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pamdriver as pd
import pytest
from fleetlib import service
from test_outage import PASSWORD, TIMEOUT, copied, wait_for

pytestmark = pytest.mark.fleet


def test_a_break_glass_member_who_joined_mfa_groups_during_an_outage_gets_in(
        make_host, confdir, pg, scratch_accounts):
    prefix = scratch_accounts
    group, ops = f"{prefix}bg", f"{prefix}ops"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-G", group, ops], check=True)
    a = make_host("a", break_glass_group=group)
    a.add_user(ops, mfa=False)
    copy = Path(a.config["state_dir"]) / "break-glass.db"
    assert wait_for(lambda: copy.exists() and copied(copy) == [ops], 10)
    a.stop()
    a.config["mfa_groups"] = [group]   # the policy changed while the database is down
    pg.stop()
    try:
        a.start()
        r = pd.run(confdir, service(confdir, a, timeout=TIMEOUT), ops, [PASSWORD])
    finally:
        pg.start()
    assert r.rc == pd.PAM_SUCCESS, (r, a.log.read_text())
    # once the database answers, the next login applies the policy
    assert wait_for(lambda: "back after" in a.log.read_text(), 15)
    pd.run(confdir, service(confdir, a, timeout=TIMEOUT), ops, [PASSWORD, ""])
    assert a.user(ops)["mfa"] == "pending"
