"""`jctotp doctor` checks the LDAP directory through the daemon (issue 14):
reachable, TLS verified, the service bind, a test user found by the filter."""

from __future__ import annotations

import json
import os

import pytest
from servers.slapd import Slapd

pytestmark = pytest.mark.ldap


def directory_findings(daemon, *args: str) -> list[tuple[str, str]]:
    out = daemon.cli("doctor", "--json", *args)
    findings = json.loads(out.stdout)
    return [(f["level"], f["what"]) for f in findings if "directory" in f["what"]]


def test_a_healthy_directory_and_a_user_found(ldap_daemon, slapd: Slapd):
    daemon = ldap_daemon()
    [(level, what)] = directory_findings(daemon, "--user", "alice")
    assert level == "ok", what
    assert "TLS verified" in what and "service bind works" in what and "alice found" in what


def test_a_user_the_filter_does_not_find(ldap_daemon, slapd: Slapd):
    daemon = ldap_daemon()
    [(level, what)] = directory_findings(daemon, "--user", "nosuchuser")
    assert level == "fail" and "'nosuchuser' not found" in what


def test_the_wrong_ca_is_named(ldap_daemon, slapd: Slapd):
    daemon = ldap_daemon(directory={"ca_file": str(slapd.wrong_ca_file)})
    found = directory_findings(daemon)
    assert found and all(level == "fail" for level, _ in found)
    assert "certificate" in found[0][1]


def test_a_refused_service_bind_is_named(ldap_daemon, slapd: Slapd, tmp_path):
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("not-the-service-password\n")
    os.chmod(wrong, 0o600)
    daemon = ldap_daemon(directory={"bind_password_file": str(wrong)})
    [(level, what)] = directory_findings(daemon, "--user", "alice")
    assert level == "fail" and "service bind" in what and "refused" in what


def test_a_stopped_directory_is_named(ldap_daemon, slapd: Slapd):
    daemon = ldap_daemon()
    slapd.stop()
    try:
        found = directory_findings(daemon)
    finally:
        slapd.start()
    assert found and found[0][0] == "fail" and slapd.ldaps_uri in found[0][1]
