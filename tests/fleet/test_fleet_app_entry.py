"""Issue 21: the authenticator app's entry is named after the fleet, never after the
host the user enrolled on (one key serves every host): the issuer is `jctotp
<fleet_name>` and `{host}` in account_name (default `{user}@{host}`) is the fleet's
name too, so the same user enrolled from host A or host B gets the same entry."""

from __future__ import annotations

import socket
import urllib.parse

import pyotp
import pytest

pytestmark = pytest.mark.fleet


def test_the_app_entry_names_the_fleet_not_the_enrolling_host(make_host, pg_uri):
    fleet = urllib.parse.urlparse(pg_uri).path.lstrip("/")
    a, b = make_host("a"), make_host("b", account_name="{user} at {host}")
    from_a = a.ok("user.add", name="alice", mfa=True, system_account=False)["otpauth_uri"]
    from_b = b.ok("user.add", name="bob", mfa=True, system_account=False)["otpauth_uri"]
    for uri, label in ((from_a, f"alice@{fleet}"), (from_b, f"bob at {fleet}")):
        totp = pyotp.parse_uri(uri)
        assert totp.issuer == f"jctotp {fleet}" and totp.name == label, uri
        for host in (socket.gethostname(), "host-a", "host-b"):
            assert host not in urllib.parse.unquote(uri), uri
