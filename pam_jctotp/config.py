"""/etc/jctotp/config.yaml: every key, its type, default and bounds.

Validated at start and on SIGHUP; every unknown key or bad value is
reported at once (one ConfigError listing each problem with its line and,
for a misspelt key, a "did you mean"). Secrets never live here (the key
that encrypts TOTP secrets is a file in `state_dir`).
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import os
import socket
import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from .directory_config import DirectoryConfig, parse_directory_collect
from .errors import ConfigError
from .printable import redact_dsn

DEFAULT_PATH = "/etc/jctotp/config.yaml"
TESTING_ENV = "JCTOTPD_TESTING"
# The shim's largest frame (transport/pam_wire.MAX_FRAME; a unit test holds
# them equal): the enrollment text with its QR code must fit in one.
PAM_FRAME_LIMIT = 16384


@dataclass(frozen=True)
class PasswordHashParams:
    # OWASP's argon2id minimum; never weaker (enforced below).
    memory_kib: int = 19456
    time_cost: int = 2
    parallelism: int = 1


@dataclass(frozen=True)
class PortalConfig:
    """`portal:` (issue 23): jctotp-portal reads listen/tls/public_url; jctotpd reads the
    rest (the session rules are enforced by the daemon, not the web layer)."""

    # The local user jctotp-portal runs as: the only non-root peer of the portal verbs.
    user: str = "jctotp-portal"
    listen: str = "127.0.0.1:8443"
    tls_cert: str | None = None
    tls_key: str | None = None
    # The URL users reach the portal at: links in mails, and the Origin forms must carry.
    public_url: str = "https://127.0.0.1:8443"
    session_idle_minutes: int = 15
    session_lifetime_minutes: int = 480
    # Sign-in and forgotten-password requests per client address and minute.
    signins_per_minute: int = 10


@dataclass(frozen=True)
class SmtpConfig:
    """`smtp:` (issue 23): where jctotpd sends its mails (never a secret or a code)."""

    host: str = "localhost"
    port: int = 25
    starttls: bool = False
    from_address: str = "jctotp@localhost"   # the key is `from`
    username: str | None = None
    password_file: str | None = None           # the password lives in a file, never here
    templates: str = "/etc/jctotp/mail"        # overrides of the shipped templates


@dataclass(frozen=True)
class Config:
    pam_socket: str = "/run/jctotp/pam.sock"
    control_socket: str = "/run/jctotp/control.sock"
    state_dir: str = "/var/lib/jctotp"
    audit_log: str = "/var/log/jctotp/audit.jsonl"
    audit_syslog: bool = True
    # What a login does when the audit log cannot be written: "continue"
    # (log the error to the daemon log, complete the login) or "deny".
    audit_failure: str = "continue"
    log_level: str = "info"
    # The authenticator app's entry: "jctotp <fleet_name>" in a fleet (one entry for
    # every host), else "jctotp <hostname>".
    issuer: str = field(default_factory=lambda: f"jctotp {socket.gethostname()}")
    fleet_name: str | None = None   # default: the fleet database's name
    account_name: str = "{user}@{host}"
    totp_digits: int = 6
    totp_period: int = 30
    totp_window: int = 1
    max_attempts: int = 5
    fail_interval: int = 900
    unlock_after: int = 900
    fail_delay: float = 2.0
    admin_groups: tuple[str, ...] = ()
    exempt_groups: tuple[str, ...] = ()
    exempt_sources: tuple[str, ...] = ()
    # Directory users (LDAP) in these groups (cn or DN) get MFA required at first login.
    mfa_groups: tuple[str, ...] = ()
    require_mfa_for_all: bool = False
    # A user the system knows but the directory does not: "refuse", or
    # "ignore" (PAM_IGNORE with factors=totp, for stacks where pam_unix or a
    # key already checked the first factor).
    unknown_users: str = "refuse"
    default_enrollment_days: int = 7
    enrollment_attempts: int = 3
    recovery_codes: int = 10
    create_system_accounts: bool = True
    # PAM connections being served at once; those parked at a prompt for a
    # person do not count (their own budget: transport/limits.py).
    max_connections: int = 256
    # Seconds a prompt waits for a person's answer: no longer than the PAM
    # application's own limit (sshd's LoginGraceTime is 120 s).
    answer_timeout: int = 120
    # Processes serving the PAM socket (issue 15): one is ~3,800 TOTP checks/s on
    # one core; each more uses another core and ~38 MB.
    pam_processes: int = 1
    password_hash: PasswordHashParams = PasswordHashParams()
    # The fleet (issue 13): a libpq URI of the shared PostgreSQL (absent = SQLite
    # in state_dir); the key every host of the fleet shares; this host's audit name.
    database: str | None = None
    secret_key_file: str | None = None
    host_name: str = field(default_factory=socket.gethostname)
    # Members of this local group may log in from a host-local copy of their
    # secret while the fleet database is down (fleet/breakglass.py).
    break_glass_group: str | None = None
    # Seconds since that copy last matched the database after which it serves
    # nobody (SSSD's offline_credentials_expiration, in seconds).
    break_glass_max_age: int = 14400
    # At fleet scale (issue 24): through PgBouncer in transaction pooling mode (no
    # prepared statements, no LISTEN: the host polls a change counter every
    # fleet_sync_interval s); each host's pool of connections to the database.
    database_pgbouncer: bool = False
    database_pool_min: int = 1
    database_pool_max: int = 8
    fleet_sync_interval: float = 2.0
    # Prometheus metrics (issue 24), off unless set: a textfile for node_exporter
    # (rewritten every metrics_interval s) and/or an HTTP endpoint on loopback.
    metrics_textfile: str | None = None
    metrics_interval: float = 15.0
    metrics_listen: str | None = None
    directory: DirectoryConfig = field(default_factory=DirectoryConfig)
    portal: PortalConfig = field(default_factory=PortalConfig)
    # How long a forgotten-password link works (single use).
    password_reset_minutes: int = 30
    smtp: SmtpConfig | None = None           # absent: no mail is sent
    # The reminder mail goes this many days before an enrollment period ends (0: none).
    enrollment_reminder_days: int = 2
    # Policy keys (POLICY_KEYS) this host keeps from its own file even when the fleet
    # database sets them (`jctotp policy set`): a deliberate local exception.
    local_overrides: tuple[str, ...] = ()
    testing: dict[str, bool] = field(default_factory=dict)

    @property
    def clock_control(self) -> bool:
        return bool(self.testing.get("clock_control"))

    @property
    def exempt_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.exempt_sources)

    @property
    def db_path(self) -> Path:
        return Path(self.state_dir) / "jctotp.db"

    @property
    def key_path(self) -> Path:
        return Path(self.secret_key_file or Path(self.state_dir) / "secret.key")


# key -> (type, lower bound, upper bound) for the numbers; enums separately.
_RANGES: dict[str, tuple[float, float]] = {
    "totp_digits": (6, 8),
    "totp_period": (15, 120),
    "totp_window": (0, 10),
    "max_attempts": (1, 100),
    "fail_interval": (1, 86400 * 7),
    "unlock_after": (0, 86400 * 365),
    "fail_delay": (0, 30),
    "default_enrollment_days": (1, 365),
    "enrollment_attempts": (1, 10),
    "recovery_codes": (0, 50),
    "max_connections": (1, 65536),
    "answer_timeout": (10, 3600),
    "pam_processes": (1, 16),
    "password_reset_minutes": (5, 1440),
    "enrollment_reminder_days": (0, 30),
    # at least the fleet sync's resync (60 s), or a copy could expire between two
    "break_glass_max_age": (60, 86400 * 30),
    "database_pool_min": (1, 100),
    "database_pool_max": (1, 100),
    "fleet_sync_interval": (0.2, 60),
    "metrics_interval": (1, 3600),
}
_ENUMS: dict[str, tuple[str, ...]] = {
    "audit_failure": ("continue", "deny"),
    "log_level": ("debug", "info", "warning", "error"),
    "unknown_users": ("refuse", "ignore"),
}
_PATHS = ("pam_socket", "control_socket", "state_dir", "audit_log", "secret_key_file",
          "metrics_textfile")


def _check_range(key: str, value: Any, checked: float, lo: float, hi: float) -> None:
    if not lo <= checked <= hi:
        raise ConfigError(f"config key {key!r}: {value} is out of range ({lo}..{hi})")


def _check_type(key: str, value: Any, want: Any) -> Any:
    if want is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected true or false, got {value!r}")
        return value
    if want is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if want is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if want is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"config key {key!r}: expected a non-empty string, got {value!r}")
        return value
    if want == "strlist":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"config key {key!r}: expected a list of strings, got {value!r}")
        return tuple(value)
    raise AssertionError(want)


_TYPES: dict[str, Any] = {
    "pam_socket": str, "control_socket": str, "state_dir": str, "audit_log": str,
    "audit_syslog": bool, "audit_failure": str, "log_level": str, "issuer": str,
    "account_name": str, "totp_digits": int, "totp_period": int, "totp_window": int,
    "max_attempts": int, "fail_interval": int, "unlock_after": int,
    "fail_delay": float,
    "admin_groups": "strlist", "exempt_groups": "strlist", "exempt_sources": "strlist",
    "mfa_groups": "strlist",
    "require_mfa_for_all": bool, "unknown_users": str, "default_enrollment_days": int,
    "enrollment_attempts": int,
    "recovery_codes": int, "create_system_accounts": bool, "max_connections": int,
    "answer_timeout": int, "pam_processes": int, "password_reset_minutes": int,
    "enrollment_reminder_days": int,
    "database": str, "secret_key_file": str, "host_name": str, "break_glass_group": str,
    "break_glass_max_age": int, "fleet_name": str,
    "database_pgbouncer": bool, "database_pool_min": int, "database_pool_max": int,
    "fleet_sync_interval": float, "metrics_textfile": str, "metrics_interval": float,
    "metrics_listen": str, "local_overrides": "strlist",
}


def _database(uri: str) -> str:
    """A libpq URI without a password: that lives in a passfile or a client cert."""
    parsed = urlsplit(uri)
    if parsed.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"config key 'database': {redact_dsn(uri)!r} is not a libpq URI "
                          "(postgresql://user@host/dbname?sslmode=verify-full)")
    if parsed.password is not None or "password" in parse_qs(parsed.query):
        raise ConfigError("config key 'database' must not contain a password: use libpq's "
                          "passfile (~/.pgpass, or ?passfile=PATH) or a client certificate")
    return uri


def database_name(uri: str) -> str:
    """The database a libpq URI names (its path; else the dbname parameter; else the
    user's name, as libpq defaults it)."""
    parsed = urlsplit(uri)
    name = unquote(parsed.path.lstrip("/")) or parse_qs(parsed.query).get("dbname", [""])[0]
    return name or unquote(parsed.username or "") or "jctotp"


_HASH_KEYS = ("memory_kib", "time_cost", "parallelism")


def _password_hash(raw: Any, problems: Problems) -> PasswordHashParams:
    if not isinstance(raw, dict):
        raise ConfigError("config key 'password_hash': expected a mapping")
    floor = PasswordHashParams()
    values: dict[str, int] = {}
    for key, value in raw.items():
        name = f"password_hash.{key}"
        with problems.collect(name):
            if key not in _HASH_KEYS:
                raise ConfigError(f"unknown config key {name!r}{_did_you_mean(key, _HASH_KEYS)}"
                                  " (expected memory_kib, time_cost, parallelism)")
            number = _check_type(name, value, int)
            if number < getattr(floor, key) or number > 4 * 1024 * 1024:
                raise ConfigError(f"config key {name!r}: {value} is weaker than OWASP's "
                                  f"argon2id minimum ({getattr(floor, key)}) or absurdly large")
            values[key] = number
    return PasswordHashParams(**values)


_PORTAL_RANGES = {"session_idle_minutes": (1, 1440), "session_lifetime_minutes": (5, 10080),
                  "signins_per_minute": (1, 1000)}


def _portal(raw: Any, problems: Problems) -> PortalConfig:
    if not isinstance(raw, dict):
        raise ConfigError("config key 'portal': expected a mapping")
    known = {f.name for f in fields(PortalConfig)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"portal.{key}"
        with problems.collect(name):
            if key not in known:
                raise ConfigError(f"unknown config key {name!r}{_did_you_mean(key, known)}")
            if key in _PORTAL_RANGES:
                number = _check_type(name, value, int)
                _check_range(name, value, number, *_PORTAL_RANGES[key])
                values[key] = number
                continue
            text = _check_type(name, value, str)
            if key in ("tls_cert", "tls_key") and not os.path.isabs(text):
                raise ConfigError(f"config key {name!r}: {value!r} must be an absolute path")
            if key == "listen":
                host, _, port = text.rpartition(":")
                if not host or not port.isdigit() or not 0 < int(port) < 65536:
                    raise ConfigError(f"config key {name!r}: {value!r} is not HOST:PORT "
                                      "(e.g. 127.0.0.1:8443)")
            if key == "public_url":
                url = urlsplit(text)
                if url.scheme not in ("https", "http") or not url.netloc or url.query:
                    raise ConfigError(f"config key {name!r}: {value!r} is not an http(s) URL "
                                      "(e.g. https://mfa.example.org)")
                text = text.rstrip("/")
            values[key] = text
    with problems.collect("portal.tls_cert"):
        if ("tls_cert" in values) != ("tls_key" in values):
            values.pop("tls_cert", None)
            values.pop("tls_key", None)
            raise ConfigError("config keys 'portal.tls_cert' and 'portal.tls_key' go together")
    return PortalConfig(**values)


_SMTP_TYPES: dict[str, Any] = {"host": str, "port": int, "starttls": bool, "from": str,
                               "username": str, "password_file": str, "templates": str}


def _smtp(raw: Any, problems: Problems) -> SmtpConfig:
    if not isinstance(raw, dict):
        raise ConfigError("config key 'smtp': expected a mapping (host, port, starttls, from, "
                          "username, password_file)")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"smtp.{key}"
        with problems.collect(name):
            if key not in _SMTP_TYPES:
                raise ConfigError(f"unknown config key {name!r}{_did_you_mean(key, _SMTP_TYPES)}")
            checked = _check_type(name, value, _SMTP_TYPES[key])
            if key == "port":
                _check_range(name, value, checked, 1, 65535)
            if key in ("password_file", "templates") and not os.path.isabs(checked):
                raise ConfigError(f"config key {name!r}: {value!r} must be an absolute path")
            if key == "from" and ("@" not in checked or any(c in checked for c in "\r\n<>")):
                raise ConfigError(f"config key {name!r}: {value!r} is not an e-mail address")
            values["from_address" if key == "from" else key] = checked
    with problems.collect("smtp.password_file"):
        if ("username" in values) != ("password_file" in values):
            values.pop("username", None)
            values.pop("password_file", None)
            raise ConfigError("config keys 'smtp.username' and 'smtp.password_file' go together")
    return SmtpConfig(**values)


def _testing(raw: Any, daemon: bool) -> dict[str, bool]:
    if not isinstance(raw, dict) or set(raw) - {"clock_control"}:
        raise ConfigError("config key 'testing': only 'clock_control: true|false' is allowed")
    enabled = _check_type("testing.clock_control", raw.get("clock_control", False), bool)
    if enabled and daemon and os.environ.get(TESTING_ENV) != "1":
        raise ConfigError(f"config key 'testing.clock_control' is for the test suite only; "
                          f"it takes effect only with {TESTING_ENV}=1 in the daemon's "
                          "environment. Remove it from a production config.")
    return {"clock_control": enabled}


class Problems:
    """Every problem of one file, each with its key (for the line number)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []   # (key, message)

    def add(self, key: str, message: str) -> None:
        self.items.append((key, message))

    def collect(self, key: str) -> "_Collect":
        return _Collect(self, key)

    def error(self, lines: dict[str, int] | None = None, path: str = "") -> ConfigError:
        where = [f"line {lines[k]}: " if lines and k in lines else "" for k, _ in self.items]
        texts = [w + m for w, (_, m) in zip(where, self.items, strict=True)]
        head = f"{path}: " if path else ""
        each = [head + t for t in texts]
        if len(texts) == 1:
            return ConfigError(each[0], each)
        return ConfigError(f"{head}{len(texts)} problems:\n" + "\n".join(
            f"  {t}" for t in texts), each)


class _Collect:
    def __init__(self, problems: Problems, key: str) -> None:
        self.problems, self.key = problems, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if isinstance(exc, ConfigError):
            self.problems.add(self.key, str(exc))
            return True
        return False


def _did_you_mean(key: object, known: Any) -> str:
    close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# The worst case of a name the enrollment text may carry: 32 characters and a
# trailing '$' (policy.NAME_RE), and a 64-byte host name (HOST_NAME_MAX). The
# worst e-mail address (policy.EMAIL_RE, EMAIL_MAX) has a 64-character local
# part the URI quotes three bytes a character; a user without one gets
# user@host for {email} (Accounts.account_label).
_WORST_USER = "u" * 32 + "$"
_WORST_HOST = "h" * 64
_WORST_EMAILS = ("{" * 64 + "@" + "d" * 31 + ".org", f"{_WORST_USER}@{_WORST_HOST}")
_ENROLLMENT_PROSE = 1024  # the sentences around the QR code, the key and the URI


@functools.lru_cache(maxsize=16)
def enrollment_frame_size(issuer: str, account_name: str) -> int:
    """Bytes of the largest enrollment text (QR code, key, URI, prose) these give.
    Cached: two QR codes cost ~70 ms, and a config is parsed again at every reload."""
    from .core import qr  # lazily: config is imported by every layer
    sizes = []
    for email in _WORST_EMAILS:
        account = account_name.format(user=_WORST_USER, host=_WORST_HOST, email=email)
        label = urllib.parse.quote(f"{issuer}:{account}", safe="@:")
        uri = (f"otpauth://totp/{label}?secret={'A' * 32}&issuer="
               f"{urllib.parse.quote(issuer)}&algorithm=SHA1&digits=8&period=120")
        sizes.append(len(qr.terminal_qr(uri).encode()) + 2 * len(uri) + _ENROLLMENT_PROSE)
    return max(sizes)


def parse(raw: Any, daemon: bool = True) -> Config:
    """Validate a mapping (already loaded from YAML) into a Config.

    Every problem is reported at once (one ConfigError). `daemon=False` (the
    CLI) skips the test-mode fence: only the daemon acts on it.
    """
    cfg, problems = parse_collect(raw, daemon)
    if problems.items:
        raise problems.error()
    return cfg


def parse_collect(raw: Any, daemon: bool = True) -> tuple[Config, Problems]:
    """The Config made of every valid key (defaults for the rest), and the problems."""
    problems = Problems()
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.add("", "the config file must be a YAML mapping of key: value")
        return Config(), problems
    known = {f.name for f in fields(Config)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        with problems.collect(str(key)):
            if key not in known:
                raise ConfigError(f"unknown config key {key!r}{_did_you_mean(key, known)}; "
                                  "see jctotp.yaml(5) for the key list")
            values[key] = _value(key, value, daemon, problems)
    with problems.collect("exempt_sources"):
        for cidr in values.get("exempt_sources", ()):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                values.pop("exempt_sources")
                raise ConfigError(f"config key 'exempt_sources': {cidr!r} is not a CIDR "
                                  "(e.g. 192.0.2.0/24)") from None
    if "fleet_name" in values and "database" not in values:
        problems.add("fleet_name", "config key 'fleet_name' names a fleet: it needs "
                     "'database' (the fleet's PostgreSQL)")
        values.pop("fleet_name")
    elif "database" in values and "fleet_name" not in values:
        values["fleet_name"] = database_name(values["database"])
    with problems.collect("fleet_name"):
        fleet = values.get("fleet_name")
        if fleet is not None and (not fleet or len(fleet) > 93 or ":" in fleet):
            values.pop("fleet_name")
            raise ConfigError("config key 'fleet_name': 1 to 93 characters without ':' (the "
                              "issuer \"jctotp <fleet_name>\" is at most 100)")
    if values.get("fleet_name") and "issuer" not in values:
        values["issuer"] = f"jctotp {values['fleet_name']}"
    for key in ("issuer", "account_name"):
        with problems.collect(key):
            if len(values.get(key, "")) > 100:
                values.pop(key)
                raise ConfigError(f"config key {key!r}: at most 100 characters")
            if ":" in values.get(key, ""):  # the otpauth:// label is "issuer:account"
                values.pop(key)
                raise ConfigError(f"config key {key!r} must not contain ':' (authenticator "
                                  "apps read it as the issuer/account separator)")
    if values.get("database_pool_min", 1) > values.get("database_pool_max", 8):
        problems.add("database_pool_min", "config key 'database_pool_min' must not exceed "
                     "database_pool_max")
    account = values.get("account_name", "{user}")
    try:  # formatted at every enrollment: a bad placeholder must fail here, not there
        account.format(user="u", host="h", email="e")
    except (KeyError, IndexError, ValueError, AttributeError):
        account = ""
    if "{user}" not in account and "{email}" not in account:
        values.pop("account_name", None)
        problems.add("account_name", "config key 'account_name' must contain {user} or "
                     "{email}, and no other placeholder than {host}")
    # The longest user (32), host (64) and e-mail (100, core/policy.py) must still
    # make a label that fits the enrollment QR code in one frame.
    elif len(account.format(user="u" * 32, host="h" * 64, email="e" * 100)) > 250:
        values.pop("account_name", None)
        problems.add("account_name", "config key 'account_name': with the longest user "
                     "name, host name and e-mail address the label passes 250 characters; "
                     "use each placeholder once")
    cfg = Config(**values)
    size = enrollment_frame_size(cfg.issuer, cfg.account_name)
    if size > PAM_FRAME_LIMIT:
        key = "issuer" if "issuer" in values else "account_name"
        problems.add(key, f"config key {key!r}: the enrollment QR code of issuer "
                     f"{cfg.issuer[:20]!r}... and account_name {cfg.account_name[:20]!r}... "
                     f"would take up to {size} bytes, over the {PAM_FRAME_LIMIT}-byte limit "
                     "of one PAM message, and no one could enroll: use a shorter issuer or "
                     "account_name (non-ASCII characters count 6 to 12 times in the QR code)")
        values.pop("issuer", None)
        values.pop("account_name", None)
        cfg = Config(**values)
    return cfg, problems


def _value(key: str, value: Any, daemon: bool, problems: Problems) -> Any:
    if key == "password_hash":
        return _password_hash(value, problems)
    if key == "testing":
        return _testing(value, daemon)
    if key == "portal":
        return _portal(value, problems)
    if key == "smtp":
        return _smtp(value, problems)
    if key == "directory":
        directory, found = parse_directory_collect(value)
        for where, message in found:
            problems.add(where, message)
        # A broken block leaves the default (local): the daemon refuses to start anyway.
        return DirectoryConfig() if found else directory
    checked = _check_type(key, value, _TYPES[key])
    if key in _RANGES:
        _check_range(key, value, checked, *_RANGES[key])
    if key in _ENUMS and checked not in _ENUMS[key]:
        raise ConfigError(f"config key {key!r}: {value!r} is not one of "
                          f"{', '.join(_ENUMS[key])}")
    if key in _PATHS and not os.path.isabs(checked):
        raise ConfigError(f"config key {key!r}: {value!r} must be an absolute path")
    if key == "database":
        return _database(checked)
    if key == "metrics_listen":
        return _loopback(checked)
    if key == "local_overrides":
        unknown = [k for k in checked if k not in POLICY_KEYS]
        if unknown:
            raise ConfigError(f"config key 'local_overrides': {', '.join(map(repr, unknown))} "
                              f"{'is' if len(unknown) == 1 else 'are'} not a policy key "
                              f"(policy keys: {', '.join(POLICY_KEYS)})")
    return checked


# The fleet's policy (issue 21): keys `jctotp policy set` may store in the fleet database,
# which then win over every host's file (unless a host lists the key in local_overrides).
# Only keys a reload applies (none of daemon.RESTART_KEYS), and none that is this host's
# own business (sockets, paths, the local break_glass_group, the store). totp_digits and
# totp_period are left to the files: a fleet-wide change would break every enrolled app.
_POLICY_CANDIDATES = (
    "max_attempts", "fail_interval", "fail_delay", "unlock_after",
    "default_enrollment_days", "enrollment_attempts", "enrollment_reminder_days",
    "mfa_groups", "admin_groups", "exempt_groups", "login_groups", "exempt_sources",
    "require_mfa_for_all", "unknown_users", "recovery_codes", "totp_window",
    "issuer", "account_name", "password_reset_minutes")
POLICY_KEYS: tuple[str, ...] = tuple(k for k in _POLICY_CANDIDATES
                                     if k in {f.name for f in fields(Config)})


def policy_value(key: str, value: Any) -> Any:
    """One policy key's value, validated by the very rules of the config file (range,
    type, the issuer/account_name checks); ConfigError naming the key. A list key
    also takes one name or "a,b" (from the command line)."""
    if key not in POLICY_KEYS:
        raise ConfigError(f"{key!r} is not a policy key{_did_you_mean(key, POLICY_KEYS)} "
                          f"(policy keys: {', '.join(POLICY_KEYS)})")
    if _TYPES.get(key) == "strlist" and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    cfg, problems = parse_collect({key: value}, daemon=False)
    if problems.items:
        raise ConfigError("; ".join(m for _, m in problems.items).replace(
            "config key", "policy key"))
    return getattr(cfg, key)


def loopback_address(value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) -> (host, port); ValueError unless a loopback IP."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected 127.0.0.1:PORT")
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError("not a loopback address")
    return host, int(port)


def _loopback(value: str) -> str:
    """metrics_listen: the root daemon's metrics are for this host's scraper only."""
    try:
        loopback_address(value)
    except ValueError as exc:
        raise ConfigError(f"config key 'metrics_listen': {value!r}: {exc} (only a loopback "
                          "address, e.g. 127.0.0.1:9877; node_exporter's textfile collector "
                          "with metrics_textfile opens no port at all)") from None
    return value


class UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that finds a key given twice in one mapping: PyYAML keeps the last one
    silently, so `max_attempts: 5` high in the file and `max_attempts: 6` lower down
    would quietly mean 6. Each is a problem of its own (the others are still listed)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for knode, _ in node.value:
            key = self.construct_object(knode, deep=True)   # type: ignore[no-untyped-call]
            try:
                first = seen.get(key)
                seen.setdefault(key, knode.start_mark.line + 1)
            except TypeError:
                continue   # an unhashable key: construct_mapping says so below
            if first is not None:
                self.duplicates.append(f"line {knode.start_mark.line + 1}: duplicate key "
                                       f"{key!r} (first on line {first}): remove one")
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str) -> tuple[Any, list[str]]:
    """The document, and its duplicate keys."""
    loader = UniqueKeyLoader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    finally:
        loader.dispose()   # type: ignore[no-untyped-call]


def key_lines(text: str) -> dict[str, int]:
    """Line (1-based) of each top-level key and of each sub-key (`password_hash.x`,
    `directory.uri`)."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if isinstance(root, yaml.MappingNode):
        for knode, vnode in root.value:
            lines[str(knode.value)] = knode.start_mark.line + 1
            if isinstance(vnode, yaml.MappingNode):
                for sub, _ in vnode.value:
                    lines[f"{knode.value}.{sub.value}"] = sub.start_mark.line + 1
    return lines


def _yaml_error_line(exc: yaml.YAMLError) -> str:
    """PyYAML's message on one line (the journal shows a newline as \\x0a)."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return " ".join(str(exc).split())
    mark = exc.problem_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if exc.context and exc.context_mark is not None:
        text += f" ({exc.context} from line {exc.context_mark.line + 1})"
    return text


def load(path: str | os.PathLike[str] = DEFAULT_PATH, daemon: bool = True) -> Config:
    """The validated config, or one ConfigError naming every problem with its line."""
    return load_with_text(path, daemon)[0]


def load_with_text(path: str | os.PathLike[str], daemon: bool = True) -> tuple[Config, str]:
    """load(), and the very text that was validated (the daemon keeps a copy)."""
    cfg, problems, lines, text = _load(path, daemon)
    if problems.items:
        raise problems.error(lines, str(path))
    return cfg, text


def load_collect(path: str | os.PathLike[str] = DEFAULT_PATH, daemon: bool = False
                 ) -> tuple[Config, list[str]]:
    """For the CLI and doctor: the valid keys (defaults for the rest) and the
    problems as text, so a typo never stops `jctotp` reaching the daemon."""
    cfg, problems, lines, _ = _load(path, daemon)
    if not problems.items:
        return cfg, []
    return cfg, problems.error(lines, str(path)).problems


def _load(path: str | os.PathLike[str], daemon: bool
          ) -> tuple[Config, Problems, dict[str, int], str]:
    problems = Problems()
    text = ""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        raw, duplicates = _parse_yaml(text)
    except FileNotFoundError:
        problems.add("", "config file not found (pass --config FILE)")
        return Config(), problems, {}, text
    except (OSError, UnicodeDecodeError) as exc:
        problems.add("", f"cannot read the config file: {exc}")
        return Config(), problems, {}, text
    except yaml.YAMLError as exc:
        problems.add("", f"not valid YAML: {_yaml_error_line(exc)}")
        return Config(), problems, {}, text
    cfg, problems = parse_collect(raw, daemon)
    for duplicate in duplicates:
        problems.add("", duplicate)
    return cfg, problems, key_lines(text), text
