"""The private slapd works as the directory tests need it (tests/ldap_server.py)."""

from __future__ import annotations

import itertools
import os
import ssl
import stat
import time

import ldap3
import pytest
from ldap3.core.exceptions import LDAPException, LDAPNoSuchObjectResult, LDAPSocketOpenError
from ldap3.utils.conv import escape_filter_chars
from servers import orphan_survives
from servers.slapd import ADMINS, BREAK_GLASS, MFA, Slapd

pytestmark = pytest.mark.ldap

USER_FILTER = "(&(objectClass=inetOrgPerson)(uid={user}))"
_names = itertools.count(1)


def connect(uri: str, ca_file: object, dn: str | None = None, password: str | None = None, *,
            start_tls: bool = False) -> ldap3.Connection:
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(ca_file))
    server = ldap3.Server(uri, tls=tls, connect_timeout=2, get_info=ldap3.NONE)
    bind = ldap3.AUTO_BIND_TLS_BEFORE_BIND if start_tls else ldap3.AUTO_BIND_NO_TLS
    return ldap3.Connection(server, user=dn, password=password, auto_bind=bind,
                            receive_timeout=2, raise_exceptions=True)


def service(slapd: Slapd) -> ldap3.Connection:
    return connect(slapd.ldaps_uri, slapd.ca_file, slapd.bind_dn, slapd.bind_password)


def find(conn: ldap3.Connection, base: str, user: str) -> list:
    conn.search(base, USER_FILTER.format(user=user), attributes=["uid", "memberOf"])
    return list(conn.entries)


def test_ldaps_user_bind_with_the_right_ca(slapd: Slapd) -> None:
    conn = connect(slapd.ldaps_uri, slapd.ca_file, slapd.user_dn("alice"),
                   slapd.passwords["alice"])
    assert conn.extend.standard.who_am_i() == "dn:" + slapd.user_dn("alice")


def test_bind_log_shows_which_dns_bound(slapd: Slapd) -> None:
    mark = slapd.log_mark()
    connect(slapd.ldaps_uri, slapd.ca_file, slapd.user_dn("bob"), slapd.passwords["bob"])
    service(slapd)
    deadline = time.monotonic() + 5   # slapd writes its log line after answering
    while len(slapd.binds_since(mark)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slapd.binds_since(mark) == [slapd.user_dn("bob"), slapd.bind_dn]


def test_wrong_password_is_refused(slapd: Slapd) -> None:
    with pytest.raises(LDAPException, match="invalidCredentials"):
        connect(slapd.ldaps_uri, slapd.ca_file, slapd.user_dn("alice"), "not-the-password")


def test_ldaps_with_the_wrong_ca_fails_on_the_certificate(slapd: Slapd) -> None:
    with pytest.raises(LDAPSocketOpenError, match="(?i)certificate"):
        connect(slapd.ldaps_uri, slapd.wrong_ca_file, slapd.user_dn("alice"),
                slapd.passwords["alice"])


def test_starttls_bind(slapd: Slapd) -> None:
    conn = connect(slapd.ldap_uri, slapd.ca_file, slapd.user_dn("bob"), slapd.passwords["bob"],
                   start_tls=True)
    assert conn.tls_started
    assert conn.extend.standard.who_am_i() == "dn:" + slapd.user_dn("bob")


def test_starttls_with_the_wrong_ca_fails(slapd: Slapd) -> None:
    with pytest.raises(LDAPException, match="(?i)certificate"):
        connect(slapd.ldap_uri, slapd.wrong_ca_file, start_tls=True)


def test_service_account_finds_users_with_member_of(slapd: Slapd) -> None:
    [carol] = find(service(slapd), slapd.users_dn, "carol")
    assert set(carol.memberOf.values) == {slapd.group_dn(ADMINS), slapd.group_dn(MFA)}
    [dave] = find(service(slapd), slapd.base_dn, "dave")
    assert dave.memberOf.values == [slapd.group_dn(BREAK_GLASS)]


def test_escaped_injection_finds_nobody(slapd: Slapd) -> None:
    conn = service(slapd)
    assert len(find(conn, slapd.users_dn, "*)(uid=*")) > 1   # unescaped: everyone
    for name in ("*)(uid=*", "admin)(|(uid=*", "*"):
        assert find(conn, slapd.users_dn, escape_filter_chars(name)) == []


def test_passwords_are_not_readable(slapd: Slapd) -> None:
    conn = service(slapd)
    conn.search(slapd.users_dn, "(uid=alice)", attributes=["userPassword"])
    assert conn.response[0]["raw_attributes"].get("userPassword", []) == []
    anonymous = connect(slapd.ldaps_uri, slapd.ca_file)
    with pytest.raises(LDAPNoSuchObjectResult):   # anonymous does not even see the base
        anonymous.search(slapd.base_dn, "(uid=*)")


def test_bind_password_file_is_private(slapd: Slapd) -> None:
    assert stat.S_IMODE(os.stat(slapd.bind_password_file).st_mode) == 0o600
    assert slapd.bind_password_file.read_text().strip() == slapd.bind_password


def test_password_modify_by_the_user(slapd: Slapd) -> None:
    name = f"pm{next(_names)}"
    old = slapd.add_user(name, groups=(MFA,))
    conn = connect(slapd.ldaps_uri, slapd.ca_file, slapd.user_dn(name), old)
    assert conn.extend.standard.modify_password(old_password=old, new_password="n3w-" + old)
    connect(slapd.ldaps_uri, slapd.ca_file, slapd.user_dn(name), "n3w-" + old)
    with pytest.raises(LDAPException, match="invalidCredentials"):
        connect(slapd.ldaps_uri, slapd.ca_file, slapd.user_dn(name), old)


def test_added_group_gives_member_of(slapd: Slapd) -> None:
    name = f"grp{next(_names)}"
    slapd.add_user(name)
    slapd.add_group(f"team-{name}", [name])
    [entry] = find(service(slapd), slapd.users_dn, name)
    assert entry.memberOf.values == [slapd.group_dn(f"team-{name}")]


def test_stop_fails_fast_then_start_works_again(slapd: Slapd) -> None:
    slapd.stop()
    began = time.monotonic()
    for uri in slapd.uris:
        with pytest.raises(LDAPSocketOpenError):
            connect(uri, slapd.ca_file, slapd.bind_dn, slapd.bind_password,
                    start_tls=uri.startswith("ldap:"))
    assert time.monotonic() - began < 5   # generous: refused connects are immediate
    slapd.start()
    assert service(slapd).bound
    assert find(service(slapd), slapd.users_dn, "alice")


@pytest.mark.parametrize("tls", ["ldaps", "starttls"])
def test_frozen_server_times_out_then_thaws(slapd: Slapd, tls: str) -> None:
    uri = slapd.ldaps_uri if tls == "ldaps" else slapd.ldap_uri
    slapd.freeze()
    try:
        began = time.monotonic()
        with pytest.raises(LDAPException):
            connect(uri, slapd.ca_file, slapd.bind_dn, slapd.bind_password,
                    start_tls=tls == "starttls")
        assert time.monotonic() - began < 8
    finally:
        slapd.thaw()
    assert service(slapd).bound


def test_server_dies_with_the_test_run() -> None:
    assert not orphan_survives("servers.slapd.new_slapd()")
