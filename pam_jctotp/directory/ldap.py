"""The directory over LDAP: the password is checked where it lives (JumpCloud's
LDAP-as-a-Service, OpenLDAP, FreeIPA, Active Directory).

A password check is a search with the service account (the filter escaped:
the name `*)(uid=*` finds nobody) and a bind as the DN found. Rules:
- an empty password never reaches a bind as the user: LDAP reads a simple
  bind with an empty password as an "unauthenticated bind", which succeeds;
- a password the library will not send (empty, not UTF-8, refused by ldap3's
  SASLprep: control characters such as sshd's fake password for unknown names,
  BS LF CR DEL "INCORRECT", a TAB, a NUL; or longer than MAX_PASSWORD) is a wrong
  password: the same lookup and a bind as nobody with a random password, so
  it costs the same and is counted. Only the network, a timeout or the server
  saying so is an outage;
- the entry's naming attribute must equal the name exactly: LDAP matching
  ignores case, and "ALICE" must not become a second MFA record of alice;
- unknown users cost the same: the same search, then a bind to a DN that
  does not exist;
- TLS is verified against `ca_file`; several URIs are tried in order; every
  network call is bounded by `timeout`;
- the directory down or refusing the service bind raises DirectoryUnavailable
  (the login fails closed) and is logged ONCE per outage, with one line again
  when it answers.

ldap3 is synchronous: the driver calls all of this in worker threads. Each
thread borrows a connection from a small pool (service-bound connections for
searches, others for user binds) and gives it back; a broken one is dropped
and the call retried once on a fresh connection (ldap_conn.py).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import ldap3
from ldap3.core.exceptions import (
    LDAPException,
    LDAPInvalidDnError,
    LDAPPasswordIsMandatoryError,
    LDAPSASLPrepError,
)
from ldap3.protocol.sasl.sasl import validate_simple_password
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from ..config.directory import DirectoryConfig
from ..errors import ConfigError, DirectoryUnavailable, NotFound, PasswordChangeRefused
from ..offline import Offline
from ..secret import Secret
from . import Identity, SystemAccounts
from .ldap_conn import LdapConnections, Pool, close_connection, describe

log = logging.getLogger("jctotpd")

CACHE_TTL = 10.0        # seconds a user's DN and groups are reused (a login looks twice)
PAGE_SIZE = 500         # entries per page of the account sync's search (RFC 2696)
MAX_PASSWORD = 1024     # bytes; PAM answers are at most 512 (PAM_MAX_RESP_SIZE)
_WRONG_CREDENTIALS = {19, 32, 34, 48, 49, 50, 53}  # constraint, noSuchObject, invalidDN,
# inappropriateAuth, invalidCredentials, insufficientAccess, unwillingToPerform
_NOT_ALLOWED = {50, 53, 2, 12}   # insufficientAccess, unwilling, protocolError, unavailableCrit.


@dataclass(frozen=True)
class Entry:
    dn: str
    groups: frozenset[str]   # each group's DN and cn, and the configured spelling of its DN
    identity: Identity | None = None   # uidNumber, gidNumber, home, shell (if it has them)


def normalise_dn(dn: str) -> str:
    """Case and spacing do not matter in a DN comparison ("CN=Admins, o=x" == "cn=admins,o=x")."""
    rdns = (part.partition("=") for part in re.split(r"(?<!\\),", dn))
    return ",".join(f"{a.strip().lower()}={v.strip().lower()}" for a, _, v in rdns)


def read_password_file(path: str) -> str:
    """The service account's password: one line of a root-only file."""
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as fh:
            password = fh.read().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"config key 'directory.bind_password_file': cannot read {path}: "
                          f"{exc.strerror}") from None
    if st.st_mode & 0o077 or st.st_uid != os.geteuid():
        raise ConfigError(f"config key 'directory.bind_password_file': {path} has mode "
                          f"{stat.S_IMODE(st.st_mode):o} owner uid {st.st_uid}; it must be "
                          "0600 and owned by root (chmod 600; chown root)")
    if not password:
        raise ConfigError(f"config key 'directory.bind_password_file': {path} is empty")
    return password


def name_attribute(user_filter: str) -> str | None:
    """The attribute that holds the login name: `uid` in (&(...)(uid={user}))."""
    found = re.search(r"\(\s*([A-Za-z][\w-]*)\s*=\s*\{user\}\s*\)", user_filter)
    return found.group(1) if found else None


class LdapDirectory(LdapConnections):
    """The `Directory` of an LDAP server; groups from both LDAP and NSS."""

    editable = False      # passwords change in the directory (RFC 3062), which may refuse
    provisions = True     # its users get an MFA record at first login

    def __init__(self, cfg: DirectoryConfig, system: SystemAccounts,
                 configured_groups: Iterable[str] = (),
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.system = system
        self._monotonic = monotonic
        if not os.access(cfg.ca_file, os.R_OK):
            raise ConfigError(f"config key 'directory.ca_file': cannot read {cfg.ca_file}")
        self._bind_password = (read_password_file(cfg.bind_password_file)
                               if cfg.bind_password_file else None)
        attr = name_attribute(cfg.user_filter)
        if attr is None:
            raise ConfigError(f"config key 'directory.user_filter': {cfg.user_filter!r} must "
                              "contain (ATTRIBUTE={user}), e.g. (uid={user})")
        self._name_attr: str = attr
        self._posix = [cfg.uid_number_attribute, cfg.gid_number_attribute,
                       cfg.home_directory_attribute, cfg.login_shell_attribute]
        # A configured group written as a DN matches however the directory spells it.
        self._configured_dns = {normalise_dn(g): g for g in configured_groups if "=" in g}
        self._tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=cfg.ca_file)
        self._servers = [(uri, uri.lower().startswith("ldap://") and cfg.start_tls)
                         for uri in cfg.uri]
        self._nobody_dn = f"cn=jctotp-no-such-user,{cfg.base_dn}"
        self._service = Pool(self._service_connection)
        self._auth = Pool(lambda: self._open(None, None))
        self._cache: dict[str, tuple[float, Entry | None]] = {}
        self._lock = threading.Lock()
        self.offline = Offline(log, "directory", "directory unavailable: {why}; logins fail "
                               "closed until it answers",
                               "directory reachable again at {where} (back after "
                               "{seconds:.0f} s)")

    def use_groups(self, configured_groups: Iterable[str]) -> None:
        """The configured groups changed (a reload, the fleet's policy): their DN
        spellings from now on; cached entries carry the old ones, so they go."""
        dns = {normalise_dn(g): g for g in configured_groups if "=" in g}
        if dns == self._configured_dns:
            return
        self._configured_dns = dns
        with self._lock:
            self._cache.clear()

    # --- the Directory protocol ------------------------------------------------------

    def verify_password(self, name: str | None, password: Secret) -> bool:
        secret = password.reveal()
        entry = self.lookup(name) if name is not None else None
        if not sendable(secret):
            # A wrong password, at the same cost: a bind nobody can pass.
            self._bind_as(self._nobody_dn, secrets.token_urlsafe(24))
            return False
        ok = self._bind_as(entry.dn if entry else self._nobody_dn, secret)
        return ok and entry is not None

    def set_password(self, name: str, password: Secret, old: Secret | None = None) -> None:
        """RFC 3062 Password Modify: as the user (with `old`), or as the service account."""
        entry = self.lookup(name)
        if entry is None:
            raise NotFound(f"no such user {name!r} in the directory")
        if old is not None:
            self._modify_as_user(name, entry.dn, old.reveal(), password.reveal())
        else:
            self._modify_as_service(name, entry.dn, password.reveal())
        log.info("directory password of %s changed (RFC 3062)", name)

    def exists(self, name: str) -> bool:
        return self.lookup(name) is not None

    def identity(self, name: str) -> Identity | None:
        entry = self.lookup(name)
        return entry.identity if entry else None

    def groups_of(self, name: str) -> frozenset[str]:
        entry = self.lookup(name)
        return self.system.groups_of(name) | (entry.groups if entry else frozenset())

    def describe(self) -> str:
        return f"ldap {', '.join(self.cfg.uri)} base {self.cfg.base_dn}"

    def check(self, user: str | None = None) -> list[str]:
        """For `jctotp doctor`: each URI reachable with TLS verified, the service bind,
        and `user` found by the filter."""
        problems = []
        reachable = False
        for uri, start_tls in self._servers:
            try:
                close_connection(self._connect(uri, start_tls))
                reachable = True
            except (LDAPException, OSError) as exc:
                problems.append(f"directory {uri}: {describe(exc, self.cfg.ca_file)}")
        if not reachable:
            return problems
        try:
            with self._service.borrow(fresh=True) as conn:
                if user is not None and self._search_user(conn, user) is None:
                    problems.append(f"directory: user {user!r} not found by "
                                    f"{self.cfg.user_filter} under {self.cfg.base_dn}")
        except DirectoryUnavailable as exc:
            problems.append(f"directory: {exc}")
        return problems

    # --- users ---------------------------------------------------------------------

    def lookup(self, name: str) -> Entry | None:
        """The user's entry (DN, groups), or None; cached for CACHE_TTL seconds."""
        now = self._monotonic()
        with self._lock:
            hit = self._cache.get(name)
        if hit is not None and now - hit[0] < CACHE_TTL:
            return hit[1]
        entry = self._with_service(lambda conn: self._search_user(conn, name))
        with self._lock:
            if len(self._cache) > 4096:   # bounded: names come from remote clients
                self._cache.clear()
            self._cache[name] = (now, entry)
        return entry

    def _user_attributes(self) -> list[str]:
        attrs = [self._name_attr, *self._posix]
        if self.cfg.group_base_dn is None:
            attrs.append(self.cfg.group_attribute)
        return attrs

    def _search_user(self, conn: ldap3.Connection, name: str) -> Entry | None:
        filt = self.cfg.user_filter.format(user=escape_filter_chars(name))
        response = self._search(conn, self.cfg.base_dn, filt, self._user_attributes(),
                                size_limit=2)
        # Exactly one entry whose name attribute is the name, byte for byte.
        found = [e for e in response
                 if name in _values(e, self._name_attr)]
        if len(found) != 1 or len(response) > 1:
            if len(response) > 1:
                log.warning("directory: %d entries match %s; refusing the ambiguous name",
                            len(response), filt)
            return None
        return self._entry(conn, name, found[0])

    def _entry(self, conn: ldap3.Connection, name: str, raw: dict[str, Any]) -> Entry:
        """A search result as an Entry: its groups (the attribute, or a group search)."""
        dn = raw["dn"]
        if self.cfg.group_base_dn is None:
            group_dns = _values(raw, self.cfg.group_attribute)
            cns: list[str] = []
        else:
            gfilt = self.cfg.group_filter.format(dn=escape_filter_chars(dn),
                                                 user=escape_filter_chars(name))
            groups = self._search(conn, self.cfg.group_base_dn, gfilt, ["cn"])
            group_dns = [g["dn"] for g in groups]
            cns = [cn for g in groups for cn in _values(g, "cn")]
        return Entry(dn, self._group_names(group_dns, cns), _identity(raw, self._posix))

    def members(self) -> dict[str, Entry]:
        """Every user `user_filter` finds (the {user} a wildcard), with groups and
        identity, for the account sync (directory/sync.py). Paged, so a directory
        larger than the server's size limit is read whole; with `group_attribute`
        one search, with `group_base_dn` one group search per user."""
        def read(conn: ldap3.Connection) -> dict[str, Entry]:
            found: dict[str, Entry] = {}
            for raw in self._paged(conn, self.cfg.user_filter.format(user="*"),
                                   self._user_attributes()):
                names = _values(raw, self._name_attr)
                if len(names) != 1:
                    continue
                entry = self._entry(conn, names[0], raw)
                if names[0] in found:   # ambiguous, as lookup() refuses it
                    found[names[0]] = Entry("", frozenset())
                else:
                    found[names[0]] = entry
            return {n: e for n, e in found.items() if e.dn}
        return self._with_service(read)

    def _paged(self, conn: ldap3.Connection, filt: str,
               attrs: list[str]) -> Iterator[dict[str, Any]]:
        cookie: Any = None
        while True:
            conn.search(self.cfg.base_dn, filt, attributes=attrs, paged_size=PAGE_SIZE,
                        paged_cookie=cookie)
            code = (conn.result or {}).get("result", 80)
            if code not in (0, 4, 32):
                raise DirectoryUnavailable(f"search under {self.cfg.base_dn} failed: "
                                           f"{(conn.result or {}).get('description')}")
            yield from [e for e in (conn.response or []) if e.get("type") == "searchResEntry"]
            cookie = ((conn.result or {}).get("controls", {})
                      .get("1.2.840.113556.1.4.319", {}).get("value", {}).get("cookie"))
            if not cookie:
                return

    def _group_names(self, dns: list[str], cns: list[str]) -> frozenset[str]:
        names = set(cns)
        for dn in dns:
            names.add(dn)
            try:
                attr, value, _ = parse_dn(dn)[0]
            except (LDAPInvalidDnError, IndexError):
                continue
            if attr.lower() == "cn":
                names.add(value)
            configured = self._configured_dns.get(normalise_dn(dn))
            if configured:
                names.add(configured)
        return frozenset(names)

    def _search(self, conn: ldap3.Connection, base: str, filt: str, attrs: list[str],
                size_limit: int = 0) -> list[dict[str, Any]]:
        conn.search(base, filt, attributes=attrs, size_limit=size_limit)
        code = (conn.result or {}).get("result", 80)
        if code not in (0, 4, 32):   # success, sizeLimitExceeded, noSuchObject
            raise DirectoryUnavailable(f"search under {base} failed: "
                                       f"{(conn.result or {}).get('description')}")
        return [e for e in (conn.response or []) if e.get("type") == "searchResEntry"]

    # --- binds -----------------------------------------------------------------------

    def _bind_as(self, dn: str, password: str) -> bool:
        def bind(conn: ldap3.Connection) -> bool:
            try:
                conn.user, conn.password = dn, password
                ok = bool(conn.bind(read_server_info=False))
            finally:
                conn.password = None
            code = (conn.result or {}).get("result")
            if not ok and code not in _WRONG_CREDENTIALS:
                raise DirectoryUnavailable(f"bind failed: {(conn.result or {}).get('description')}")
            return ok
        return self._with(self._auth, bind)

    def _modify_as_user(self, name: str, dn: str, old: str, new: str) -> None:
        def change(conn: ldap3.Connection) -> None:
            try:
                conn.user, conn.password = dn, old
                bound = conn.bind(read_server_info=False)
            finally:
                conn.password = None
            if not bound:
                raise PasswordChangeRefused("That password is not right; nothing was changed.")
            self._password_modify(conn, name, None, old, new)
        if not sendable(old):
            raise PasswordChangeRefused("That password is not right; nothing was changed.")
        if not sendable(new):
            raise PasswordChangeRefused("The directory cannot take that password (control "
                                        "characters or too long). Nothing was changed.")
        self._with(self._auth, change)

    def _modify_as_service(self, name: str, dn: str, new: str) -> None:
        if not sendable(new):
            raise PasswordChangeRefused("The directory cannot take that password (control "
                                        "characters or too long). Nothing was changed.")
        self._with_service(lambda conn: self._password_modify(conn, name, dn, None, new))

    def _password_modify(self, conn: ldap3.Connection, name: str, dn: str | None,
                         old: str | None, new: str) -> None:
        ok = conn.extend.standard.modify_password(user=dn, old_password=old, new_password=new)
        if ok:
            return
        result = conn.result or {}
        code, text = result.get("result"), result.get("message") or result.get("description")
        if code in _NOT_ALLOWED:
            raise PasswordChangeRefused(
                f"The directory does not let jctotp change the password of {name} ({text}); "
                f"change it {self.cfg.password_change_hint}. Nothing was changed.")
        if code == 19:   # constraintViolation: the directory's password policy
            raise PasswordChangeRefused(f"The directory refused the new password: {text}. "
                                        "Nothing was changed.")
        raise DirectoryUnavailable(f"password modify failed: {text}")


def _identity(entry: dict[str, Any], attrs: list[str]) -> Identity | None:
    """The POSIX identity from uidNumber, gidNumber, homeDirectory, loginShell (by
    their configured names); None without a usable uidNumber and gidNumber."""
    uid, gid, home, shell = (next(iter(_values(entry, a)), "") for a in attrs)
    try:
        numbers = int(uid or ""), int(gid or "")
    except ValueError:
        return None
    if not all(0 < n < 2**32 - 1 for n in numbers):
        return None
    return Identity(numbers[0], numbers[1], home or None, shell or None)


def sendable(password: str) -> bool:
    """True if ldap3 will send this password in a simple bind. False for an empty one
    (an "unauthenticated bind" succeeds), one that is not UTF-8, longer than
    MAX_PASSWORD, or refused by SASLprep (RFC 4013: control characters, a TAB, a NUL)."""
    try:
        return 0 < len(password.encode("utf-8")) <= MAX_PASSWORD and \
            bool(validate_simple_password(password))
    except (UnicodeEncodeError, LDAPSASLPrepError, LDAPPasswordIsMandatoryError):
        return False


def _values(entry: dict[str, Any], attr: str) -> list[str]:
    """An attribute's values from a search response entry, whatever the case of its name."""
    for key, value in (entry.get("attributes") or {}).items():
        if key.lower() == attr.lower():
            return [str(v) for v in (value if isinstance(value, list) else [value])]
    return []
