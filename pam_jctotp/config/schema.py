"""Every key of /etc/jctotp/config.yaml, declared once.

A key is one dataclass field: its annotation is its type, `key()` gives its
default and what else it is (range, choices, absolute path, restart-only, a
check of its own, a doc line: checks.Key). The tables the validator and the
daemon use (ranges, enums, paths, types, restart keys) are derived below.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from . import checks
from .checks import is_block, key, kinds, meta
from .directory import DirectoryConfig

_OWASP = "the floor is OWASP's argon2id minimum (never weaker)"
_ARGON2_MAX = 4 * 1024 * 1024


@dataclass(frozen=True)
class PasswordHashParams:
    """`password_hash:` argon2id of the local directory's passwords."""

    memory_kib: int = key(19456, range=(19456, _ARGON2_MAX), why=_OWASP)
    time_cost: int = key(2, range=(2, _ARGON2_MAX), why=_OWASP)
    parallelism: int = key(1, range=(1, _ARGON2_MAX), why=_OWASP)


@dataclass(frozen=True)
class PortalConfig:
    """`portal:` (issue 23): jctotp-portal reads listen/tls/public_url; jctotpd reads the
    rest (the session rules are enforced by the daemon, not the web layer)."""

    user: str = key("jctotp-portal", doc="the only non-root peer of the portal verbs")
    listen: str = key("127.0.0.1:8443", check=checks.host_port)
    tls_cert: str | None = key(None, path=True, together="tls_key")
    tls_key: str | None = key(None, path=True)
    public_url: str = key("https://127.0.0.1:8443", check=checks.http_url,
                          doc="the URL in mails, and the Origin forms must carry")
    session_idle_minutes: int = key(15, range=(1, 1440))
    session_lifetime_minutes: int = key(480, range=(5, 10080))
    signins_per_minute: int = key(10, range=(1, 1000),
                                  doc="sign-in and forgotten-password requests per address")


@dataclass(frozen=True)
class SmtpConfig:
    """`smtp:` (issue 23): where jctotpd sends its mails (never a secret or a code)."""

    host: str = key("localhost")
    port: int = key(25, range=(1, 65535))
    starttls: bool = key(False)
    from_address: str = key("jctotp@localhost", yaml="from", check=checks.email)
    username: str | None = key(None, together="password_file")
    password_file: str | None = key(None, path=True, doc="the password lives here, never in "
                                    "config.yaml")
    templates: str = key("/etc/jctotp/mail", path=True, doc="overrides of the shipped templates")


@dataclass(frozen=True)
class Config:
    pam_socket: str = key("/run/jctotp/pam.sock", path=True, restart=True)
    control_socket: str = key("/run/jctotp/control.sock", path=True, restart=True)
    state_dir: str = key("/var/lib/jctotp", path=True, restart=True)
    audit_log: str = key("/var/log/jctotp/audit.jsonl", path=True)
    audit_syslog: bool = key(True)
    audit_failure: str = key("continue", choices=("continue", "deny"),
                             doc="a login whose audit line cannot be written: complete or deny")
    log_level: str = key("info", choices=("debug", "info", "warning", "error"))
    issuer: str = key(factory=lambda: f"jctotp {socket.gethostname()}", policy=True,
                      doc="the app's entry: jctotp <fleet_name> in a fleet, else <hostname>")
    fleet_name: str | None = key(None, doc="default: the fleet database's name")
    account_name: str = key("{user}@{host}", policy=True)
    totp_digits: int = key(6, range=(6, 8))
    totp_period: int = key(30, range=(15, 120))
    totp_window: int = key(1, policy=True, range=(0, 10))
    max_attempts: int = key(5, policy=True, range=(1, 100))
    fail_interval: int = key(900, policy=True, range=(1, 86400 * 7))
    unlock_after: int = key(900, policy=True, range=(0, 86400 * 365))
    fail_delay: float = key(2.0, policy=True, range=(0, 30))
    # The group keys apply on reload, with LDAP too (daemon.swap hands the directory
    # their DN spellings), so the fleet's policy may set them.
    admin_groups: tuple[str, ...] = key((), policy=True)
    exempt_groups: tuple[str, ...] = key((), policy=True)
    exempt_sources: tuple[str, ...] = key((), policy=True, check=checks.cidrs)
    mfa_groups: tuple[str, ...] = key((), policy=True,
                                      doc="directory groups (cn or DN) whose users need MFA")
    require_mfa_for_all: bool = key(False, policy=True)
    unknown_users: str = key("refuse", policy=True, choices=("refuse", "ignore"),
                             doc="a user the system knows but the directory does not: refuse, "
                             "or PAM_IGNORE (a stack where something else checked the password)")
    default_enrollment_days: int = key(7, policy=True, range=(1, 365))
    enrollment_attempts: int = key(3, policy=True, range=(1, 10))
    recovery_codes: int = key(10, policy=True, range=(0, 50))
    # Binds only as the fleet's policy (`jctotp policy set`): the database refuses a
    # host role's MFA reset/disable, unlock, remove when false (store/pg_userwrites.py).
    host_admin_verbs: bool = key(True, policy=True,
                                 doc="false: only the fleet database's owner may reset, "
                                 "disable, unlock or remove users")
    create_system_accounts: bool = key(True)
    # Who makes directory users' Linux accounts (directory_sync.py): "daemon" (useradd
    # with the directory's UID, GID, home, shell) or "nss" (sssd or nslcd: none made).
    accounts: str = key("daemon", choices=("daemon", "nss"), restart=True)
    login_groups: tuple[str, ...] = key((), policy=True,
                                        doc="directory groups whose users get an account "
                                        "and a record (no MFA required) before their first login")
    directory_sync_interval: float = key(300.0, range=(0, 86400), restart=True,
                                         doc="seconds between two reads of the directory's "
                                         "members (0: accounts made at the first login)")
    max_connections: int = key(256, range=(1, 65536), restart=True,
                               doc="PAM connections served at once (not those at a prompt)")
    answer_timeout: int = key(120, range=(10, 3600),
                              doc="seconds a prompt waits for a person (sshd's grace: 120)")
    pam_processes: int = key(1, range=(1, 16), restart=True,
                             doc="processes serving the PAM socket (issue 15)")
    password_hash: PasswordHashParams = key(PasswordHashParams(), restart=True)
    # The fleet (issue 13): the store, the key, the audit name and the sync are made at start.
    database: str | None = key(None, restart=True, secret=True, check=checks.database_uri,
                               doc="libpq URI of the fleet's PostgreSQL (absent: SQLite)")
    secret_key_file: str | None = key(None, path=True, restart=True)
    host_name: str = key(factory=socket.gethostname, restart=True)
    break_glass_group: str | None = key(None, restart=True,
                                        doc="may log in from a local copy while the fleet "
                                        "database is down")
    # At least the fleet sync's resync (60 s), or a copy could expire between two.
    break_glass_max_age: int = key(14400, range=(60, 86400 * 30))
    # The LDAP password verifiers age apart from the copy: they are renewed only by a
    # member's password login (or `jctotp break-glass`), not by a sync (SSSD counts days).
    break_glass_password_max_age: int = key(604800, range=(60, 86400 * 365),
                                            doc="seconds a break-glass verifier of a directory "
                                            "password serves during a directory outage")
    database_pgbouncer: bool = key(False, restart=True)
    database_pool_min: int = key(1, range=(1, 100), restart=True)
    database_pool_max: int = key(8, range=(1, 100), restart=True)
    fleet_sync_interval: float = key(2.0, range=(0.2, 60), restart=True)
    # Prometheus metrics (issue 24): their files, writer thread and port are made at start.
    metrics_textfile: str | None = key(None, path=True, restart=True)
    metrics_interval: float = key(15.0, range=(1, 3600), restart=True)
    metrics_listen: str | None = key(None, restart=True, check=checks.loopback)
    # An LDAP directory holds connections, its password file and CA.
    directory: DirectoryConfig = key(factory=DirectoryConfig, restart=True)
    portal: PortalConfig = key(factory=PortalConfig)
    password_reset_minutes: int = key(30, policy=True, range=(5, 1440),
                                      doc="how long a forgotten-password link works")
    smtp: SmtpConfig | None = key(None, restart=True, doc="absent: no mail is sent")
    enrollment_reminder_days: int = key(2, policy=True, range=(0, 30),
                                        doc="days before a period ends (0: no reminder)")
    # Policy keys this host keeps from its own file even when the fleet database sets
    # them (`jctotp policy set`): a deliberate local exception.
    local_overrides: tuple[str, ...] = key((), check=lambda k, v: _policy_names(k, v))
    testing: dict[str, bool] = key(factory=dict, restart=True)

    @property
    def clock_control(self) -> bool:
        return bool(self.testing.get("clock_control"))

    @property
    def password_params(self) -> PasswordHashParams:
        """password_hash; under testing.fast_password_hash argon2id at 1 MiB and one pass
        (the test suite hashes thousands of passwords at ~30 ms each otherwise)."""
        if self.testing.get("fast_password_hash"):
            return PasswordHashParams(memory_kib=1024, time_cost=1, parallelism=1)
        return self.password_hash

    @property
    def exempt_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.exempt_sources)

    @property
    def makes_accounts(self) -> bool:
        """Does the daemon make Linux accounts (`accounts: nss`: never)?"""
        return self.create_system_accounts and self.accounts == "daemon"

    @property
    def login_group_keys(self) -> tuple[str, ...]:
        """The groups whose members the directory sync gives an account and a record."""
        return self.mfa_groups + self.login_groups + self.admin_groups

    @property
    def db_path(self) -> Path:
        return Path(self.state_dir) / "jctotp.db"

    @property
    def key_path(self) -> Path:
        return Path(self.secret_key_file or Path(self.state_dir) / "secret.key")


# --- derived from the declarations ------------------------------------------------------

Entry = tuple[str, type, dataclasses.Field[Any]]


def walk(cls: type = Config, prefix: str = "") -> Iterator[Entry]:
    """(dotted YAML name, its block's class, field) of every key, blocks' keys too."""
    for f in fields(cls):
        name = prefix + checks.yaml_name(f)
        kind = kinds(cls)[f.name]
        yield name, cls, f
        if dataclasses.is_dataclass(kind) and isinstance(kind, type):
            yield from walk(kind, name + ".")


def ranges(cls: type) -> dict[str, tuple[float, float]]:
    return {checks.yaml_name(f): r for f in fields(cls) if (r := meta(f).range)}


def enums(cls: type) -> dict[str, tuple[str, ...]]:
    return {checks.yaml_name(f): c for f in fields(cls) if (c := meta(f).choices)}


def paths(cls: type) -> tuple[str, ...]:
    return tuple(checks.yaml_name(f) for f in fields(cls) if meta(f).path)


def scalar_types(cls: type) -> dict[str, Any]:
    """YAML name -> bool, int, float, str or "strlist" (blocks left out)."""
    return {checks.yaml_name(f): kinds(cls)[f.name] for f in fields(cls)
            if not is_block(kinds(cls)[f.name])}


# The old tables, by their old names (tests and tools read them).
_RANGES = ranges(Config)
_ENUMS = enums(Config)
_PATHS = paths(Config)
_TYPES = scalar_types(Config)
_PORTAL_RANGES = ranges(PortalConfig)
_SMTP_TYPES = scalar_types(SmtpConfig)
_HASH_KEYS = tuple(f.name for f in fields(PasswordHashParams))

# Read once at start (sockets, the store, pools, the test clock...): a reload that
# changes one keeps the running value and says a restart is needed.
RESTART_KEYS = tuple(f.name for f in fields(Config) if meta(f).restart)


def restart_keys(cfg: Config) -> tuple[str, ...]:
    """(A function of the config: a key may one day need a restart only in some setups.)"""
    return RESTART_KEYS


# The fleet's policy (issue 21): keys `jctotp policy set` may store in the fleet
# database, which then win over every host's file (unless a host lists the key in
# local_overrides). Only keys a reload applies, none that is this host's own business
# (sockets, paths, the local break_glass_group, the store); totp_digits and totp_period
# stay in the files: a fleet-wide change would break every enrolled app.
POLICY_KEYS = tuple(f.name for f in fields(Config) if meta(f).policy)


def _policy_names(key: str, value: tuple[str, ...]) -> tuple[str, ...]:
    from ..errors import ConfigError
    unknown = [k for k in value if k not in POLICY_KEYS]
    if unknown:
        raise ConfigError(f"config key {key!r}: {', '.join(map(repr, unknown))} "
                          f"{'is' if len(unknown) == 1 else 'are'} not a policy key "
                          f"(policy keys: {', '.join(POLICY_KEYS)})")
    if "host_admin_verbs" in value:   # the fleet database enforces the fleet's value
        raise ConfigError(f"config key {key!r}: 'host_admin_verbs' cannot be a local "
                          "override: the fleet database enforces the fleet's value")
    return value
