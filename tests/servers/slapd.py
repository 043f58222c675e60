"""A private slapd for tests (issue 14), laid out like JumpCloud's LDAP-as-a-Service.

Listens on ldap://127.0.0.1:PORT (StartTLS) and ldaps://127.0.0.1:PORT2 only, plus
an ldapi socket in its temp dir through which root administers it (SASL EXTERNAL,
no admin password anywhere). Its own cn=config (slapadd -n0), an mdb database,
the memberof and refint overlays, TLS from a test CA. The tree:

    dc=jumpcloud,dc=com
      o=ORG_ID                         base_dn
        ou=Users                       users_dn: uid=NAME (inetOrgPerson + posixAccount)
          uid=svc-jctotp               bind_dn: the service account (reads the tree)
          uid=alice  (mfa)             uid=bob  (no group)
          uid=carol  (admins, mfa)     uid=dave (break-glass)
        ou=Groups                      groups_dn: cn=admins, cn=break-glass, cn=mfa (groupOfNames)

Users may bind, read their own entry and change their own userPassword (RFC 3062
Password Modify); the service account reads everything but passwords; anonymous
may only bind. Every password is random per session: read them from `passwords`.
`stop()` / `start()` take it down and back up (same ports, same data); `freeze()` /
`thaw()` make it hang instead (SIGSTOP: connects succeed, nothing answers).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from servers import ServerProcess, accepts, free_port, server_fixtures, write_file
from servers.certs import TlsFiles, write_tls_files

ORG_ID = "5f1e0c9a8b7d6e5f4a3b2c1d"
SUFFIX = "dc=jumpcloud,dc=com"
ROOT_EXTERNAL_DN = "gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth"
ADMINS, BREAK_GLASS, MFA = "admins", "break-glass", "mfa"
INITIAL_USERS = {"alice": (MFA,), "bob": (), "carol": (ADMINS, MFA), "dave": (BREAK_GLASS,)}


def ssha(password: str) -> str:
    """{SSHA} userPassword value (slapd verifies it; the clear text never reaches slapd's files)."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


# --- the server -------------------------------------------------------------------------

@dataclass
class Slapd(ServerProcess):
    """One private slapd; `start()` creates it on first call, `stop()`/`start()` mid-test."""

    dir: Path
    org_id: str = ORG_ID
    ldap_port: int = 0
    ldaps_port: int = 0
    passwords: dict[str, str] = field(default_factory=dict)
    tls: TlsFiles | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _next_uid: int = field(default=10001, repr=False)

    # --- names ----------------------------------------------------------------

    @property
    def base_dn(self) -> str:
        return f"o={self.org_id},{SUFFIX}"

    @property
    def users_dn(self) -> str:
        return f"ou=Users,{self.base_dn}"

    @property
    def groups_dn(self) -> str:
        return f"ou=Groups,{self.base_dn}"

    def user_dn(self, name: str) -> str:
        return f"uid={name},{self.users_dn}"

    def group_dn(self, cn: str) -> str:
        return f"cn={cn},{self.groups_dn}"

    @property
    def bind_dn(self) -> str:
        return self.user_dn("svc-jctotp")

    @property
    def bind_password(self) -> str:
        return self.passwords["svc-jctotp"]

    @property
    def bind_password_file(self) -> Path:
        """The service account's password alone (0600), for `bind_password_file:`."""
        return self.dir / "ldap.pw"

    @property
    def ldap_uri(self) -> str:
        """StartTLS endpoint."""
        return f"ldap://127.0.0.1:{self.ldap_port}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def uris(self) -> list[str]:
        return [self.ldaps_uri, self.ldap_uri]

    @property
    def ca_file(self) -> Path:
        """The CA that signed the server's certificate (SAN localhost, 127.0.0.1)."""
        assert self.tls, "start() first"
        return self.tls.ca_file

    @property
    def wrong_ca_file(self) -> Path:
        """An unrelated CA: verifying the server against it must fail."""
        assert self.tls, "start() first"
        return self.tls.wrong_ca_file

    @property
    def ldapi_path(self) -> Path:
        return self.dir / "ldapi"

    @property
    def ldapi_uri(self) -> str:
        return "ldapi://" + quote(str(self.ldapi_path), safe="")

    @property
    def log(self) -> Path:
        """slapd's stats log (connections, binds, searches, results)."""
        return self.dir / "slapd.log"

    def log_mark(self) -> int:
        """A position in the log, for `binds_since`."""
        return self.log.stat().st_size if self.log.exists() else 0

    def binds_since(self, mark: int = 0) -> list[str]:
        """DNs of the simple binds slapd received after `mark` (anonymous: ""): how a test
        knows whether a password reached the directory at all."""
        with open(self.log, "rb") as f:
            f.seek(mark)
            text = f.read().decode(errors="replace")
        return re.findall(r' BIND dn="([^"]*)" method=128', text)

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> Slapd:
        fresh = not (self.dir / "slapd.d").exists()
        if fresh:
            self.tls = write_tls_files(self.dir)
            self._make_config()
        for attempt in range(3):
            if not self.ldap_port or attempt:
                self.ldap_port, self.ldaps_port = free_port(), free_port()
            if self._spawn():
                break
        else:
            raise RuntimeError(f"slapd did not start:\n{self.log_tail()}")
        if fresh:
            self._populate()
        return self

    def _spawn(self) -> bool:
        """Run slapd in the foreground as our child, logging stats (binds, searches) to
        `log`; True once all listeners accept."""
        urls = f"{self.ldap_uri}/ {self.ldaps_uri}/ {self.ldapi_uri}"
        proc = self.spawn(["/usr/sbin/slapd", "-d", "stats", "-h", urls,
                           "-F", str(self.dir / "slapd.d")])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False    # typically a port clash: the caller picks new ports
            if all(accepts(p) for p in (self.ldap_port, self.ldaps_port)) \
                    and self.ldapi_path.exists():
                return True
            time.sleep(0.02)
        self.stop()
        return False

    # --- set-up ---------------------------------------------------------------------

    def _make_config(self) -> None:
        (self.dir / "db").mkdir(mode=0o700)
        (self.dir / "slapd.d").mkdir(mode=0o700)
        svc = self.bind_dn
        d = self.dir
        tls = self.tls
        assert tls
        ldif = f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {d}/slapd.pid
olcArgsFile: {d}/slapd.args
olcTLSCACertificateFile: {self.ca_file}
olcTLSCertificateFile: {tls.cert_file}
olcTLSCertificateKeyFile: {tls.key_file}
olcTLSProtocolMin: 3.3
olcPasswordHash: {{SSHA}}

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: memberof
olcModuleLoad: refint

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif

include: file:///etc/ldap/schema/cosine.ldif

include: file:///etc/ldap/schema/nis.ldif

include: file:///etc/ldap/schema/inetorgperson.ldif

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by dn.exact={ROOT_EXTERNAL_DN} manage by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcDbDirectory: {d}/db
olcSuffix: {SUFFIX}
olcRootDN: {ROOT_EXTERNAL_DN}
olcDbIndex: objectClass eq
olcDbIndex: uid eq
olcDbIndex: member eq
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to * by self read by dn.exact="{svc}" read by * none

dn: olcOverlay={{0}}memberof,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {{0}}memberof
olcMemberOfRefInt: TRUE
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf

dn: olcOverlay={{1}}refint,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcRefintConfig
olcOverlay: {{1}}refint
olcRefintAttribute: memberof member
"""
        config = write_file(d / "config.ldif", ldif)
        done = subprocess.run(["/usr/sbin/slapadd", "-n0", "-F", str(d / "slapd.d"),
                               "-l", str(config)], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"slapadd -n0 failed: {done.stderr}")

    def _populate(self) -> None:
        """The JumpCloud-shaped tree, added online so the memberof overlay sees the groups."""
        self.ldapadd(f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: jumpcloud
o: jumpcloud

dn: {self.base_dn}
objectClass: organization
o: {self.org_id}

dn: {self.users_dn}
objectClass: organizationalUnit
ou: Users

dn: {self.groups_dn}
objectClass: organizationalUnit
ou: Groups
""")
        self.add_user("svc-jctotp")
        write_file(self.bind_password_file, self.bind_password + "\n", 0o600)
        for name in INITIAL_USERS:
            self.add_user(name)
        for group in (ADMINS, BREAK_GLASS, MFA):
            self.add_group(group, [n for n, gs in INITIAL_USERS.items() if group in gs])

    # --- administration (as root over ldapi, bypassing ACLs) -----------------------------

    def ldapadd(self, ldif: str) -> None:
        self._ldap_tool("ldapadd", ldif)

    def ldapmodify(self, ldif: str) -> None:
        """Any change, cn=config included (e.g. olcAccess for an admin-passwd test)."""
        self._ldap_tool("ldapmodify", ldif)

    def _ldap_tool(self, tool: str, ldif: str) -> None:
        done = subprocess.run([tool, "-Q", "-Y", "EXTERNAL", "-H", self.ldapi_uri],
                              input=ldif, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip()}")

    def add_user(self, name: str, password: str | None = None, groups: tuple[str, ...] = (),
                 uid: int | None = None, shell: str = "/bin/bash") -> str:
        """Add uid=NAME under ou=Users (and to existing `groups` by cn), with uidNumber
        `uid` (default: the next from 10001) = gidNumber; returns its password."""
        password = password if password is not None else secrets.token_urlsafe(16)
        if uid is None:
            uid, self._next_uid = self._next_uid, self._next_uid + 1
        self.ldapadd(f"""\
dn: {self.user_dn(name)}
objectClass: inetOrgPerson
objectClass: posixAccount
uid: {name}
cn: {name}
sn: {name}
uidNumber: {uid}
gidNumber: {uid}
homeDirectory: /home/{name}
loginShell: {shell}
userPassword: {ssha(password)}
""")
        self.passwords[name] = password
        for group in groups:
            self.add_to_group(group, name)
        return password

    def add_group(self, cn: str, members: list[str] | tuple[str, ...] = ()) -> str:
        """Add cn=CN under ou=Groups (groupOfNames needs a member: an empty one gets the
        service account); returns its DN."""
        names = list(members) or ["svc-jctotp"]
        lines = "".join(f"member: {self.user_dn(n)}\n" for n in names)
        self.ldapadd(f"dn: {self.group_dn(cn)}\nobjectClass: groupOfNames\ncn: {cn}\n{lines}")
        return self.group_dn(cn)

    def add_to_group(self, cn: str, name: str) -> None:
        self.ldapmodify(f"dn: {self.group_dn(cn)}\nchangetype: modify\nadd: member\n"
                        f"member: {self.user_dn(name)}\n")

    def remove_user(self, name: str) -> None:
        """Delete uid=NAME (refint drops it from its groups)."""
        self.ldapmodify(f"dn: {self.user_dn(name)}\nchangetype: delete\n")
        self.passwords.pop(name, None)

    def set_password(self, name: str, password: str) -> None:
        self.ldapmodify(f"dn: {self.user_dn(name)}\nchangetype: modify\nreplace: userPassword\n"
                        f"userPassword: {ssha(password)}\n")
        self.passwords[name] = password


def new_slapd() -> Slapd:
    """Create and start a slapd in a fresh temp dir (runs as root: the test's user)."""
    return Slapd(Path(tempfile.mkdtemp(prefix="jctotp-ldap-"))).started()


# --- fixtures (a conftest imports these names) ------------------------------------------

slapd_server, slapd = server_fixtures(new_slapd, "slapd_server", "slapd")
