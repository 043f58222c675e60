"""Fixtures of the portal tier: jctotpd + jctotp-portal on 127.0.0.1 (issue 23)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from portallib import Browser, PortalServer, bound_socket  # noqa: E402


@pytest.fixture
def stack(make_daemon):
    """(daemon, portal): the daemon's public_url is the portal's bound address."""
    made = []

    def make(**overrides):
        sock = bound_socket()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        portal_keys = {"public_url": url, **overrides.pop("portal", {})}
        daemon = make_daemon(portal=portal_keys, **overrides)
        server = PortalServer(daemon.config, sock)
        made.append(server)
        return daemon, server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def browser_for():
    return Browser


@pytest.fixture
def smtp():
    from smtpsink import Sink
    sink = Sink().start()
    yield sink
    sink.stop()
