"""`jctotpd --check`: will this config start? (issue 21)

`jctotpd --check && systemctl restart jctotpd` must never leave a host with no
daemon, so beyond the config file itself (duplicate keys included) this finds
what would stop the start, as errors:
- an optional module the config needs and Debian packages apart (the LDAP
  directory: python3-ldap3; a fleet database: python3-psycopg and
  python3-psycopg-pool);
- the key file: missing on a fleet host, or with a wrong mode, owner or size;
- the LDAP directory's own files (ca_file, bind_password_file);
and, as warnings (errors with `--strict`), what the daemon would start without
but where every login would fail closed: the fleet database or the directory
not answering, or a fleet key file that is not the database's key.

Read-only: nothing is created or migrated (the running daemons of a fleet keep
their schema while a new version is checked).
"""

from __future__ import annotations

import hmac
import importlib
from dataclasses import dataclass, field

from . import config as configmod
from .crypto import key_check, read_key
from .errors import JctotpError

# module -> the Debian package that has it
LDAP_MODULES = {"ldap3": "python3-ldap3"}
FLEET_MODULES = {"psycopg": "python3-psycopg", "psycopg_pool": "python3-psycopg-pool"}
CONNECT_TIMEOUT = 5   # seconds, for the database probe


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # errors with --strict


def check(cfg: configmod.Config) -> Findings:
    found = Findings()
    needed = dict(LDAP_MODULES) if cfg.directory.is_ldap else {}
    if cfg.database:
        needed.update(FLEET_MODULES)
    missing = [f"{module} (apt install {package})" for module, package in needed.items()
               if not _importable(module)]
    if missing:
        found.errors.append("a Python module this config needs is not installed: "
                            + ", ".join(missing))
        return found
    key = _key(cfg, found)
    if cfg.database:
        _database(cfg, cfg.database, key, found)
    if cfg.directory.is_ldap:
        _directory(cfg, found)
    return found


def missing_module_error(exc: ImportError) -> str | None:
    """The sysadmin's line for an optional module that is not there (None: not one)."""
    for module, package in {**LDAP_MODULES, **FLEET_MODULES}.items():
        if exc.name == module:
            return f"the Python module {module} is not installed: apt install {package}"
    return None


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _key(cfg: configmod.Config, found: Findings) -> bytes | None:
    """The key file as the daemon would read it. A single host makes its own at the
    first start, so only a fleet host needs one already."""
    if not cfg.database and not cfg.key_path.exists():
        return None
    try:
        return read_key(cfg.key_path)
    except JctotpError as exc:
        found.errors.append(str(exc))
        return None


def _database(cfg: configmod.Config, uri: str, key: bytes | None, found: Findings) -> None:
    """The fleet database answers, has the schema, and its key check is this key's.
    One read with the driver, not the store (which would migrate the schema)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    info = conninfo_to_dict(uri)   # config.py has parsed it already
    where = f"the fleet database {info.get('dbname', '')} on {info.get('host', 'localhost')}"
    try:
        with psycopg.connect(uri, connect_timeout=CONNECT_TIMEOUT,
                             autocommit=True) as conn:
            row = conn.execute("SELECT value FROM jctotp_meta WHERE key = 'key_check'"
                               ).fetchone()
    except psycopg.errors.UndefinedTable:
        found.warnings.append(f"{where} has no jctotp schema: run `jctotp fleet init` on "
                              "the first host")
        return
    except psycopg.Error as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        found.warnings.append(f"{where} does not answer ({text}): the daemon would start, "
                              "with every login failing closed until it does")
        return
    if row is None:
        found.warnings.append(f"{where} has no key check: run `jctotp fleet init` on the "
                              "first host")
    elif key is not None and not hmac.compare_digest(row[0], key_check(key)):
        found.errors.append(f"key file {cfg.key_path} is not the key of {where} (key check "
                            "mismatch): copy secret_key_file from a host of the fleet")


def _directory(cfg: configmod.Config, found: Findings) -> None:
    from .directory.ldap import LdapDirectory
    from .directory.nss import NssAccounts
    try:
        directory = LdapDirectory(cfg.directory, NssAccounts(),
                                  cfg.admin_groups + cfg.exempt_groups + cfg.mfa_groups)
    except JctotpError as exc:
        found.errors.append(str(exc))
        return
    for problem in directory.check():
        found.warnings.append(f"{problem} (logins would fail closed until it answers)")
