"""`jctotp user show` and `user list` with the LDAP directory: they say where a
password is checked, and the list (read from the MFA store) still prints during a
directory outage, with one warning on stderr."""

from __future__ import annotations

import json
import re

import pytest
from servers.slapd import Slapd

pytestmark = pytest.mark.ldap


def provisioned(daemon, *names: str) -> None:
    """MFA records for directory users (as their first login would make them)."""
    for name in names:
        daemon.ok("user.add", name=name, mfa=False, system_account=False)


def test_user_show_says_the_directory_checks_the_password(ldap_daemon):
    daemon = ldap_daemon()
    provisioned(daemon, "bob")
    human = daemon.cli("user", "show", "bob")
    assert human.returncode == 0, human.stderr
    assert re.search(r"^password +directory \(ldap\)$", human.stdout, re.M), human.stdout
    assert "has password" not in human.stdout   # "no" there reads as "cannot log in"
    shown = json.loads(daemon.cli("user", "show", "bob", "--json").stdout)
    assert shown["password"] == "directory (ldap)"
    assert shown["has_password"] is False   # the key scripts know: no local hash


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
def test_user_list_prints_from_the_store_during_an_outage(ldap_daemon, slapd: Slapd,
                                                          outage):
    daemon = ldap_daemon()
    provisioned(daemon, "bob", "carol")
    assert [u["admin"] for u in daemon.ok("user.list")] == [False, True]  # carol: cn=admins
    daemon.stop()   # a fresh daemon: nothing cached from the directory
    slapd.stop() if outage == "stopped" else slapd.freeze()
    try:
        daemon.start()
        listed = daemon.cli("user", "list", "--json")
        human = daemon.cli("user", "list")
        shown = daemon.cli("user", "show", "carol", "--json")
    finally:
        slapd.healthy()
    for out in (listed, human, shown):
        assert out.returncode == 0, out.stderr
        assert out.stderr.count("the directory is unavailable") == 1, out.stderr
        assert "local (NSS) groups only" in out.stderr, out.stderr
    assert [u["name"] for u in json.loads(listed.stdout)] == ["bob", "carol"]
    assert [row.split()[0] for row in human.stdout.splitlines()[1:]] == ["bob", "carol"]
    assert json.loads(shown.stdout)["password"] == "directory (ldap)"


def test_no_warning_when_the_directory_answers(ldap_daemon):
    daemon = ldap_daemon()
    provisioned(daemon, "bob")
    out = daemon.cli("user", "list")
    assert out.returncode == 0 and out.stderr == "", out.stderr
