"""The fleet through PgBouncer in transaction pooling mode (issue 24).

Every host's `database:` names a private PgBouncer (tests/servers/pgbouncer.py)
in front of the private PostgreSQL, with `database_pgbouncer: true`: no
server-side prepared statements, no LISTEN (the sync thread polls the change
counter every `fleet_sync_interval`). The bouncer's `max_client_conn` is low
and its pool small, so a host that held more connections than its pool, or
state across transactions, would fail here. The two-host tests of
test_two_hosts.py run again through it, unchanged.
"""

from __future__ import annotations

import time
from pathlib import Path

import pamdriver as pd
import pytest
from fleetlib import service
from servers.pgbouncer import POOL_SIZE, bouncer, bouncer_server  # noqa: F401
from test_two_hosts import (  # noqa: F401 - collected again here, through the bouncer
    PASSWORD,
    test_a_code_accepted_on_a_is_refused_on_b,
    test_admin_actions_on_one_host_take_effect_on_the_other,
    test_fifty_logins_with_one_code_split_over_two_hosts_accept_exactly_one,
    test_fifty_wrong_guesses_split_over_two_hosts_lock_after_five,
    wrong,
)
from testlib import code_at

pytestmark = pytest.mark.fleet

SYNC = 1.0   # fleet_sync_interval of these hosts


@pytest.fixture
def pg_uri(pg_uri, bouncer):  # noqa: F811 - the fresh database, through the bouncer
    return bouncer.through(pg_uri)


@pytest.fixture
def make_host(make_host, bouncer, pg_uri):  # noqa: F811
    def make(name, **overrides):
        host = make_host(name, database_pgbouncer=True, fleet_sync_interval=SYNC,
                         **overrides)
        assert f":{bouncer.port}/" in host.config["database"]
        return host
    yield make
    # the bouncer never needed more server connections than its pool
    dbname = pg_uri.split("?")[0].rsplit("/", 1)[1]
    assert 0 < bouncer.server_connections(dbname) <= POOL_SIZE


def marker(host, user: str) -> Path:
    return Path(host.config["state_dir"]) / "locked" / user


def appears(check, within: float) -> float | None:
    """Seconds until check() holds, or None after `within`."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def test_a_lock_and_an_unlock_on_a_reach_b_local_copy_within_the_sync_interval(
        make_host, confdir):
    """B's lock marker (what failmode=open reads while B's daemon is down) follows a
    lock made on A, and its removal follows an unlock on A, within the sync interval:
    B polls the change counter (no LISTEN through the bouncer)."""
    a = make_host("a", max_attempts=2, unlock_after=0)
    b = make_host("b", max_attempts=2, unlock_after=0)
    totp = a.add_user("alice")
    assert b.log.exists()
    time.sleep(SYNC + 0.5)   # B has synced at least once since alice was added
    assert not marker(b, "alice").exists()
    for _ in range(2):
        pd.run(confdir, service(confdir, a), "alice", [PASSWORD, wrong(totp)])
    assert a.user("alice")["locked"]
    took = appears(lambda: marker(b, "alice").exists(), SYNC + 2)
    assert took is not None, b.log.read_text()
    a.ok("unlock", names=["alice"])
    took = appears(lambda: not marker(b, "alice").exists(), SYNC + 2)
    assert took is not None, b.log.read_text()
    b.set_clock(30)
    assert pd.run(confdir, service(confdir, b), "alice",
                  [PASSWORD, code_at(totp, 30)]).rc == pd.PAM_SUCCESS


