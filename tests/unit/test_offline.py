"""The one offline state (pam_jctotp/offline.py) the fleet database and the LDAP
directory share (issue 19): one "down" and one "back" line per outage, however
many threads fail during it."""

from __future__ import annotations

import logging
import threading

from pam_jctotp.directory import ldap
from pam_jctotp.offline import Offline
from pam_jctotp.store import outage


def test_one_line_each_way_per_outage_from_many_threads(caplog):
    state = Offline(logging.getLogger("test.offline"), "db", "{what} unavailable: {why}",
                    "{what} back after {seconds:.0f} s at {where}")
    barrier = threading.Barrier(16)

    def fail() -> None:
        barrier.wait()
        state.went_down("refused")

    with caplog.at_level(logging.WARNING, logger="test.offline"):
        threads = [threading.Thread(target=fail) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert state.down
        assert [state.back("h1") for _ in range(3)] == [True, False, False]
        assert not state.down
        state.went_down("timeout")   # a second outage: its own lines
        state.back("h2")
    assert [r.getMessage() for r in caplog.records] == [
        "db unavailable: refused", "db back after 0 s at h1",
        "db unavailable: timeout", "db back after 0 s at h2"]


def test_a_value_with_braces_is_not_a_template():
    state = Offline(logging.getLogger("test.offline"), "{x}", "{what}: {why}", "{what}")
    assert state.went_down("{y}")


def test_the_database_and_the_directory_share_it():
    assert ldap.Offline is outage.Offline is Offline
