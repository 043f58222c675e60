"""The daemon keeps every delay below the shim's timeout (issue 9 item 1), real libpam.

The shim says its `timeout=` in HELLO. A fail_delay (2 s) longer than that
is cut short, so a refusal arrives as a refusal (AUTH_ERR), never as a
timeout that `failmode=open` could read as "daemon unavailable"; the daemon
says so in its log once, not at every login.
"""

from __future__ import annotations

import pamdriver as pd
import pytest
from testlib import code_at

# Elapsed < 1 s against a 1 s timeout: runs alone, after the parallel part (scripts/test.sh).
pytestmark = [pytest.mark.pam, pytest.mark.serial]


def test_fail_delay_is_cut_below_the_shims_timeout_and_logged_once(make_daemon, confdir):
    daemon = make_daemon(fail_delay=2.0)
    totp = daemon.add_user("alice")
    opts = f"socket={daemon.pam_socket} factors=totp timeout=1"
    pd.write_service(confdir, "jctotp-delay", [f"auth required {pd.SHIM} {opts}"])
    for user in ("alice", "alice", "nobody-here"):
        good = code_at(totp)
        r = pd.run(confdir, "jctotp-delay", user, [f"{(int(good) + 1) % 1000000:06d}"])
        assert r.rc == pd.PAM_AUTH_ERR, r  # a refusal, not a timeout
        assert r.elapsed < 1.0, r.elapsed
    log = daemon.log.read_text()
    assert log.count("fail_delay 2.0s is not below the PAM timeout budget") == 1, log
    assert pd.run(confdir, "jctotp-delay", "alice", [code_at(totp, 30)]).rc == pd.PAM_SUCCESS
