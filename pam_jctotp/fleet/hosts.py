"""`jctotp fleet host add | list | remove` (issue 22): a database role per host.

The verbs that make or drop roles connect as the schema's owner, given with
`--admin-database URI` (a role with CREATEROLE and pg_signal_backend); its password
comes from libpq's passfile (PGPASSFILE, ~/.pgpass or passfile= in the URI), never
from the command line, so a URI holding one is refused. `host add` writes what the
new host needs into --out DIR: `pgpass` (0600, its generated password) and
`config.yaml` (its `database:` and `host_name:` lines), and says how to install them.
`host rotate` gives one host's role a new password and writes the same two files.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from .. import config as configmod
from ..daemon import open_fleet
from ..errors import UsageError
from ..store import pg_hosts
from . import certs

DEFAULT_PASSFILE = "/etc/jctotp/pgpass"


def admin_config(cfg: configmod.Config, uri: str) -> configmod.Config:
    """The config with `database:` replaced by the owner's URI (no password in it)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict
    try:
        params = conninfo_to_dict(uri)
    except ProgrammingError as exc:
        raise UsageError(f"--admin-database is not a libpq URI: {exc}") from None
    if "password" in params:
        raise UsageError("--admin-database must not hold a password (it would be seen in "
                         "ps and the shell's history): put it in a libpq passfile "
                         "(PGPASSFILE, ~/.pgpass, or passfile=PATH in the URI)")
    return replace(cfg, database=uri)


def _name(name: str) -> str:
    if not pg_hosts.NAME.fullmatch(name):
        raise UsageError(f"host name {name!r}: letters, digits, '.', '_' or '-' "
                         "(at most 40, starting with a letter or digit)")
    return name


def _passfile_line(host: str, port: str, dbname: str, user: str, password: str) -> str:
    def esc(value: str) -> str:   # libpq passfile: ':' and '\\' escaped
        return value.replace("\\", "\\\\").replace(":", "\\:")
    return ":".join(esc(v) for v in (host, port, dbname, user, password)) + "\n"


def _write_private(path: Path, text: str) -> None:
    """0600 from the start: the password never sits in a readable file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _out_dir(out: Path) -> None:
    """Before the role changes: a dir we cannot write would strand its password."""
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(out, 0o700)
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror}") from None


def _as_owner(cfg: configmod.Config, admin_uri: str, work: Any) -> str:
    store = open_fleet(admin_config(cfg, admin_uri))
    try:
        try:
            return str(store.administer(work))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    finally:
        store.close()


def _write_credentials(name: str, admin_uri: str, role: str, password: str, out: Path,
                       passfile: str, cert: Path | None = None) -> None:
    """DIR/pgpass (the password, 0600) and DIR/config.yaml (the host's `database:`);
    `cert` (the fleet CA's dir): a client certificate too, which the URI names."""
    from psycopg.conninfo import conninfo_to_dict
    params = conninfo_to_dict(admin_uri)
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    dbname = str(params.get("dbname") or params.get("user") or "")
    _write_private(out / "pgpass", _passfile_line(host, port, dbname, role, password))
    # the owner's URI without its user, password file or service: the host's own
    keep = {k: str(v) for k, v in params.items()
            if k not in ("host", "port", "dbname", "user", "passfile", "password", "service")}
    extra = {}
    if cert is not None:   # installed beside the passfile
        certs.client_cert(cert, role.split("_")[1], role, out)
        home = Path(passfile).parent
        extra = {"sslcert": str(home / "client.crt"), "sslkey": str(home / "client.key")}
        if keep.get("sslmode") in (None, "disable", "allow", "prefer"):
            keep["sslmode"] = "require"   # a certificate goes only over TLS
    query = urlencode({**keep, "passfile": passfile, **extra}, safe="/")
    uri = f"postgresql://{quote(role)}@{host}:{port}/{quote(dbname)}?{query}"
    _write_private(out / "config.yaml",
                   f"# jctotp fleet host {name} (role {role})\n"
                   f"database: {uri}\nhost_name: {name}\n")


def _cert_text(cfg: configmod.Config, cert: Path | None, role: str, passfile: str) -> str:
    if cert is None:
        return ""
    home = Path(passfile).parent
    return (f"Client certificate: client.crt and client.key (CN {role}, signed by the fleet "
            f"CA {cert / certs.CA_CERT}): install them as {home}/client.crt and "
            f"{home}/client.key (0600). The server must trust the fleet CA "
            f"(ssl_ca_file = '{certs.CA_CERT}') and let the role in by it: in pg_hba.conf, "
            f"hostssl DBNAME {role} ADDRESS cert\n")


def add(cfg: configmod.Config, name: str, admin_uri: str, out: Path,
        passfile: str = DEFAULT_PASSFILE, client_cert: bool = False) -> str:
    _name(name)
    admin_config(cfg, admin_uri)   # refuses a URI holding a password, before anything
    password = secrets.token_urlsafe(32)
    _out_dir(out)
    role = _as_owner(cfg, admin_uri, partial(pg_hosts.add, name=name, password=password,
                                             now=time.time()))
    cert = Path(cfg.state_dir) if client_cert else None
    _write_credentials(name, admin_uri, role, password, out, passfile, cert)
    return (f"Host {name} added to the fleet: database role {role}.\n"
            + _cert_text(cfg, cert, role, passfile) +
            f"In {out}: pgpass (its password, mode 0600) and config.yaml.\n"
            f"On {name}, as root:\n"
            f"  1. install -m 0600 -o root -g root pgpass {passfile}\n"
            "  2. put the lines of config.yaml into /etc/jctotp/config.yaml (replacing its "
            "`database:` and `host_name:`)\n"
            f"  3. copy the fleet's key file to its secret_key_file, mode 0600 "
            f"(e.g. scp -p {cfg.key_path} root@{name}:{cfg.key_path})\n"
            "  4. systemctl restart jctotpd, then `jctotp doctor`\n"
            f"Then delete {out}: it holds the host's password.\n")


def rotate(cfg: configmod.Config, name: str, admin_uri: str, out: Path,
           passfile: str = DEFAULT_PASSFILE, client_cert: bool = False) -> str:
    """A new password for one host's role (a leaked pgpass, a routine change); no other
    host changes. Sessions open with the old one go on until they end."""
    _name(name)
    admin_config(cfg, admin_uri)
    password = secrets.token_urlsafe(32)
    _out_dir(out)
    role = _as_owner(cfg, admin_uri, partial(pg_hosts.new_password, name=name,
                                             password=password))
    cert = Path(cfg.state_dir) if client_cert else None
    _write_credentials(name, admin_uri, role, password, out, passfile, cert)
    return (f"Host {name}: database role {role} has a new password; the old one is "
            "refused from now on (sessions already open go on until they end).\n"
            + _cert_text(cfg, cert, role, passfile) +
            f"In {out}: pgpass (mode 0600) and config.yaml (unchanged `database:`).\n"
            f"On {name}, as root: install -m 0600 -o root -g root pgpass {passfile}, then "
            "systemctl restart jctotpd and `jctotp doctor`.\n"
            f"Then delete {out}: it holds the host's password.\n")


def remove(cfg: configmod.Config, name: str, admin_uri: str) -> str:
    """Revoke at once: the role may not log in nor use any privilege (committed
    first), its open sessions are ended, the role is dropped. Its audit rows stay."""
    _name(name)
    role = _as_owner(cfg, admin_uri, partial(pg_hosts.revoke, name=name, now=time.time()))
    ended = _as_owner(cfg, admin_uri, partial(pg_hosts.end_sessions, role=role))
    return (f"Host {name} removed from the fleet: role {role} dropped, {ended} open "
            "session(s) ended; its audit rows stay. Its jctotpd deletes its break-glass "
            "copy when the database refuses it. On the host (if you still can): "
            "apt-get purge pam-jctotp, or delete its pgpass and key file.\n")


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def listing(cfg: configmod.Config, admin_uri: str | None) -> str:
    store = open_fleet(admin_config(cfg, admin_uri) if admin_uri else cfg)
    try:
        rows = store.administer(pg_hosts.listing)
    finally:
        store.close()
    if not rows:
        return "No host roles (every host uses the fleet's shared role).\n"
    lines = [f"{'HOST':<24} {'STATE':<8} {'ADDED':<21} {'LAST SEEN':<21} SESSIONS"]
    for name, added, removed, seen, sessions in rows:
        lines.append(f"{name:<24} {'removed' if removed else 'active':<8} "
                     f"{_when(added):<21} {_when(seen):<21} {sessions}")
    return "\n".join(lines) + "\n"
