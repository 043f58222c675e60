"""Fixtures for the directory tier (issue 14): one private slapd for the session.

    slapd_server   session: the Slapd (tests/ldap_server.py), stopped and removed at the end
    slapd          per test: the same server, thawed/started again before and after the test
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ldap_server import Slapd, new_slapd


@pytest.fixture(scope="session")
def slapd_server() -> Iterator[Slapd]:
    server = new_slapd()
    try:
        yield server
    finally:
        server.destroy()


def _healthy(server: Slapd) -> None:
    server.thaw()
    if not server.running:
        server.start()


@pytest.fixture
def slapd(slapd_server: Slapd) -> Iterator[Slapd]:
    _healthy(slapd_server)
    yield slapd_server
    _healthy(slapd_server)   # a test that stopped or froze it leaves it up for the next
