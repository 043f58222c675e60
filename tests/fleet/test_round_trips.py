"""Round trips to the fleet database per login (issue 13: "keep round trips per login
few: say how many a login makes"), counted by PostgreSQL itself.

The test database logs every statement (`log_statement = all`, set before the
host connects); a login's statements are the entries its PAM call added to the
server log, without the ones that are not on the login's path: the audit rows
(a background thread inserts them in batches), the fleet sync's resyncs (users and
policy) and the
readings of the database's clock (once a minute, store/dbclock.py).
Each entry is one round trip (psycopg sends Parse/Bind/Execute/Sync at once).
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pamdriver as pd
import pytest
from fleetlib import service
from testlib import code_at

pytestmark = pytest.mark.fleet

PASSWORD = "correct horse battery"
ENTRY = re.compile(r"LOG:  (?:statement|execute [^:]*): (.*)")
OFF_PATH = ("audit_events", "ORDER BY name", "LISTEN ", "clock_timestamp",
            "fleet_policy",   # the fleet sync reads the fleet's policy (issue 21) with the users
            "FROM jctotp_meta")   # ... and the key check (fleet/rotate.py's KeyLearner.sync)


def statements(pg, since: int) -> list[str]:
    """The statements logged after byte `since` of the server log, first lines only."""
    time.sleep(0.2)   # the server writes its log through a pipe
    text = pg.log.read_bytes()[since:].decode(errors="replace")
    found = []
    for line in text.splitlines():
        m = ENTRY.search(line)
        if m:
            found.append(m.group(1).strip())
    return found


def wrong(totp, offset: float) -> str:
    return "000000" if code_at(totp, offset) != "000000" else "111111"


def login_round_trips(pg, confdir, svc, answers, call="auth") -> tuple[pd.Result, list[str]]:
    since = pg.log.stat().st_size
    r = pd.run(confdir, svc, "alice", answers, call=call)
    # the continuation lines of a long statement are not entries: look at each whole
    # entry's first line (enough to tell audit and sync statements apart)
    return r, [s for s in statements(pg, since) if not any(o in s for o in OFF_PATH)]


def test_round_trips_per_login(make_host, confdir, pg, pg_uri):
    pg.psql(f"ALTER DATABASE {urlsplit(pg_uri).path.lstrip('/')} SET log_statement = 'all';")
    a = make_host("a", max_attempts=100)
    totp = a.add_user("alice")
    svc, code_only = service(confdir, a), service(confdir, a, "totp", extra="factors=totp")
    seen = {}
    for label, s, answers, rc in (
            ("password + right code", svc, [PASSWORD, code_at(totp)], pd.PAM_SUCCESS),
            ("password + wrong code", svc, [PASSWORD, wrong(totp, 0)], pd.PAM_AUTH_ERR),
            ("right code only", code_only, [code_at(totp, 30)], pd.PAM_SUCCESS),
            ("wrong code only", code_only, [wrong(totp, 30)], pd.PAM_AUTH_ERR)):
        if label == "right code only":
            a.set_clock(30)
        r, seen[label] = login_round_trips(pg, confdir, s, answers)
        assert r.rc == rc, (label, r)
    r, seen["acct_mgmt"] = login_round_trips(pg, confdir, svc, [], call="acct")
    assert r.rc == pd.PAM_SUCCESS, r
    counts = {label: len(found) for label, found in seen.items()}
    # With a password: read the user (before the prompts), reserve an attempt, read
    # the password hash (the local directory, after the prompts: a password changed
    # meanwhile counts), then the code, checked by the database (issue 22: hosts hold
    # no key) in ONE statement with, when right, its step and the counter's reset;
    # a wrong one below the limit: nothing more (the limit's attempt locks).
    assert counts == {"password + right code": 4, "password + wrong code": 4,
                      "right code only": 3, "wrong code only": 3, "acct_mgmt": 1}, seen
