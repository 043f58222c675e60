"""The `directory:` block of config.yaml (pam_jctotp/config/directory.py)."""

from __future__ import annotations

import pytest

from pam_jctotp import config
from pam_jctotp.config import ConfigError

ORG = "o=5f1e0c9a8b7d6e5f4a3b2c1d,dc=jumpcloud,dc=com"
JUMPCLOUD = {
    "type": "ldap",
    "uri": ["ldaps://ldap.jumpcloud.com:636"],
    "ca_file": "/etc/ssl/certs/ca-certificates.crt",
    "base_dn": f"ou=Users,{ORG}",
    "user_filter": "(&(objectClass=inetOrgPerson)(uid={user}))",
    "bind_dn": f"uid=svc-jctotp,ou=Users,{ORG}",
    "bind_password_file": "/etc/jctotp/ldap.pw",
    "group_attribute": "memberOf",
    "timeout": 5,
}


def error(directory) -> str:
    with pytest.raises(ConfigError) as exc:
        config.parse({"directory": directory})
    return str(exc.value)


def test_default_is_the_local_directory():
    cfg = config.parse({})
    assert cfg.directory.type == "local" and not cfg.directory.is_ldap
    assert cfg.mfa_groups == ()


def test_the_issue_s_jumpcloud_example_parses():
    cfg = config.parse({"directory": JUMPCLOUD, "mfa_groups": ["mfa", f"cn=admins,{ORG}"]})
    d = cfg.directory
    assert d.is_ldap and d.uri == ("ldaps://ldap.jumpcloud.com:636",)
    assert d.timeout == 5.0 and d.bind_dn.startswith("uid=svc-jctotp")
    assert cfg.mfa_groups == ("mfa", f"cn=admins,{ORG}")


def test_a_single_uri_string_is_a_list_of_one():
    assert config.parse({"directory": {**JUMPCLOUD, "uri": "ldaps://a:636"}}
                        ).directory.uri == ("ldaps://a:636",)


def test_plain_ldap_is_refused_without_starttls():
    message = error({**JUMPCLOUD, "uri": ["ldap://ldap.example.com"]})
    assert "'directory.uri'" in message and "start_tls" in message


def test_plain_ldap_with_starttls_is_fine():
    cfg = config.parse({"directory": {**JUMPCLOUD, "uri": ["ldap://ldap.example.com"],
                                      "start_tls": True}})
    assert cfg.directory.start_tls


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.1.2.3"])
def test_allow_insecure_only_on_loopback(host):
    cfg = config.parse({"directory": {**JUMPCLOUD, "uri": [f"ldap://{host}:389"],
                                      "allow_insecure": True}})
    assert cfg.directory.allow_insecure


def test_allow_insecure_refused_for_a_remote_host():
    message = error({**JUMPCLOUD, "uri": ["ldap://ldap.example.com"], "allow_insecure": True})
    assert "'directory.allow_insecure'" in message and "loopback" in message


def test_every_problem_is_named_at_once():
    message = error({"type": "ldap", "uri": ["http://x"], "timout": 5,
                     "user_filter": "uid={user}", "bind_dn": "uid=svc", "timeout": 0})
    for key in ("'directory.uri'", "'directory.timout'", "did you mean 'directory.timeout'",
                "'directory.base_dn'", "'directory.user_filter'", "'directory.bind_dn'",
                "'directory.timeout'"):
        assert key in message, (key, message)


@pytest.mark.parametrize("raw, key", [
    ({"type": "nis"}, "'directory.type'"),
    ({**JUMPCLOUD, "uri": []}, "'directory.uri'"),
    ({**JUMPCLOUD, "ca_file": "certs/ca.pem"}, "'directory.ca_file'"),
    ({**JUMPCLOUD, "start_tls": "yes"}, "'directory.start_tls'"),
    ({**JUMPCLOUD, "user_filter": "(uid={name})"}, "'directory.user_filter'"),
    ({**JUMPCLOUD, "group_filter": "(member={dn})"}, "'directory.group_filter'"),
    ({**JUMPCLOUD, "uri": ["ldaps://h/ou=x"]}, "'directory.uri'"),
    ({"type": "local", "uri": ["ldaps://h"]}, "'directory.uri'"),
])
def test_bad_values_are_named(raw, key):
    assert key in error(raw)


def test_a_bind_password_never_goes_in_the_config():
    assert "'directory.bind_password'" in error({**JUMPCLOUD, "bind_password": "x"})
