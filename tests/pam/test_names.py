"""A user name typed at sshd reaches no person raw (issue 9 item 7), real libpam.

The name comes from a remote client: ESC sequences, CR, BEL, backspace,
U+0085, U+2028 and U+2029 could clear the admin's screen, forge a line of
`jctotp audit` or of the daemon log, or break line-based readers of the
JSON audit file. They are shown as escapes; `--json` keeps the exact name.
"""

from __future__ import annotations

import json

import pamdriver as pd
import pytest

pytestmark = pytest.mark.pam

HOSTILE = "evil\x1b[2J\x1b[H\rroot login_ok\x07\x08\x7f\x85\u2028\u2029\x9bend"
RAW = set("\x1b\r\x07\x08\x7f\x85\u2028\u2029\x9b")


def test_hostile_names_are_escaped_in_jctotp_audit_the_log_and_the_file(daemon, confdir):
    opts = f"socket={daemon.pam_socket} timeout=5"
    pd.write_service(confdir, "jctotp-names", [f"auth required {pd.SHIM} {opts}"])
    r = pd.run(confdir, "jctotp-names", HOSTILE, ["a password", "123456"])
    assert r.rc == pd.PAM_AUTH_ERR, r

    table = daemon.cli("audit")
    assert table.returncode == 0, table.stderr
    assert not RAW & set(table.stdout), repr(table.stdout)
    line = next(x for x in table.stdout.splitlines() if "login_fail" in x)
    assert "evil\\x1b[2J\\x1b[H\\x0droot login_ok\\x07\\x08\\x7f\\x85\\u2028\\u2029\\x9bend" \
        in line
    assert len(table.stdout.splitlines()) == len(daemon.audit_events())  # one line each

    exact = daemon.cli("audit", "--json")
    assert exact.returncode == 0, exact.stderr
    assert [e["user"] for e in json.loads(exact.stdout) if e["event"] == "login_fail"] \
        == [HOSTILE]

    text = daemon.audit_path.read_text(encoding="utf-8")
    assert not RAW & set(text), repr(text)
    assert len(text.splitlines()) == len(daemon.audit_events())  # str.splitlines: U+2028 too

    log = daemon.log.read_text(encoding="utf-8")
    assert not RAW & set(log), repr(log[-2000:])
    assert "user=evil\\x1b[2J" in log
