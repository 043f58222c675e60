"""/etc/jctotp/config.yaml: every key, its type, default and bounds.

Validated once at start; an unknown key or a bad value is a ConfigError that
names the key and says what is expected. Secrets never live here (the key
that encrypts TOTP secrets is a file in `state_dir`).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .directory_config import DirectoryConfig, parse_directory
from .errors import ConfigError

DEFAULT_PATH = "/etc/jctotp/config.yaml"
TESTING_ENV = "JCTOTPD_TESTING"


@dataclass(frozen=True)
class PasswordHashParams:
    # OWASP's argon2id minimum; never weaker (enforced below).
    memory_kib: int = 19456
    time_cost: int = 2
    parallelism: int = 1


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
    issuer: str = field(default_factory=lambda: f"jctotp {socket.gethostname()}")
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
    max_connections: int = 256
    password_hash: PasswordHashParams = PasswordHashParams()
    directory: DirectoryConfig = field(default_factory=DirectoryConfig)
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
        return Path(self.state_dir) / "secret.key"


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
}
_ENUMS: dict[str, tuple[str, ...]] = {
    "audit_failure": ("continue", "deny"),
    "log_level": ("debug", "info", "warning", "error"),
    "unknown_users": ("refuse", "ignore"),
}
_PATHS = ("pam_socket", "control_socket", "state_dir", "audit_log")


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
}


def _password_hash(raw: Any) -> PasswordHashParams:
    if not isinstance(raw, dict):
        raise ConfigError("config key 'password_hash': expected a mapping")
    floor = PasswordHashParams()
    values: dict[str, int] = {}
    for key, value in raw.items():
        name = f"password_hash.{key}"
        if key not in ("memory_kib", "time_cost", "parallelism"):
            raise ConfigError(f"unknown config key {name!r} "
                              "(expected memory_kib, time_cost, parallelism)")
        values[key] = _check_type(name, value, int)
        if values[key] < getattr(floor, key) or values[key] > 4 * 1024 * 1024:
            raise ConfigError(f"config key {name!r}: {value} is weaker than OWASP's argon2id "
                              f"minimum ({getattr(floor, key)}) or absurdly large")
    return PasswordHashParams(**values)


def _testing(raw: Any, daemon: bool) -> dict[str, bool]:
    if not isinstance(raw, dict) or set(raw) - {"clock_control"}:
        raise ConfigError("config key 'testing': only 'clock_control: true|false' is allowed")
    enabled = _check_type("testing.clock_control", raw.get("clock_control", False), bool)
    if enabled and daemon and os.environ.get(TESTING_ENV) != "1":
        raise ConfigError(f"config key 'testing.clock_control' is for the test suite only; "
                          f"it takes effect only with {TESTING_ENV}=1 in the daemon's "
                          "environment. Remove it from a production config.")
    return {"clock_control": enabled}


def parse(raw: Any, daemon: bool = True) -> Config:
    """Validate a mapping (already loaded from YAML) into a Config.

    `daemon=False` (the CLI) skips the test-mode fence: only the daemon acts on it.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("the config file must be a YAML mapping of key: value")
    known = {f.name for f in fields(Config)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"unknown config key {key!r}; see the README for the key list")
        if key == "password_hash":
            values[key] = _password_hash(value)
        elif key == "testing":
            values[key] = _testing(value, daemon)
        elif key == "directory":
            values[key] = parse_directory(value)
        else:
            values[key] = _check_type(key, value, _TYPES[key])
        if key in _RANGES:
            lo, hi = _RANGES[key]
            if not lo <= values[key] <= hi:
                raise ConfigError(f"config key {key!r}: {value} is out of range ({lo}..{hi})")
        if key in _ENUMS and values[key] not in _ENUMS[key]:
            raise ConfigError(f"config key {key!r}: {value!r} is not one of "
                              f"{', '.join(_ENUMS[key])}")
        if key in _PATHS and not os.path.isabs(values[key]):
            raise ConfigError(f"config key {key!r}: {value!r} must be an absolute path")
    for cidr in values.get("exempt_sources", ()):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"config key 'exempt_sources': {cidr!r} is not a CIDR "
                              "(e.g. 192.0.2.0/24)") from None
    for key in ("issuer", "account_name"):
        if len(values.get(key, "")) > 100:  # the QR code must fit in one protocol frame
            raise ConfigError(f"config key {key!r}: at most 100 characters")
        if ":" in values.get(key, ""):  # the otpauth:// label is "issuer:account"
            raise ConfigError(f"config key {key!r} must not contain ':' (authenticator "
                              "apps read it as the issuer/account separator)")
    account = values.get("account_name", "{user}")
    try:  # formatted at every enrollment: a bad placeholder must fail here, not there
        account.format(user="u", host="h", email="e")
    except (KeyError, IndexError, ValueError, AttributeError):
        account = ""
    if "{user}" not in account and "{email}" not in account:
        raise ConfigError("config key 'account_name' must contain {user} or {email}, and "
                          "no other placeholder than {host}")
    # The longest user (32), host (64) and e-mail (100, core/policy.py) must still
    # make a label that fits the enrollment QR code in one frame.
    if len(account.format(user="u" * 32, host="h" * 64, email="e" * 100)) > 250:
        raise ConfigError("config key 'account_name': with the longest user name, host "
                          "name and e-mail address the label passes 250 characters; use "
                          "each placeholder once")
    return Config(**values)


def load(path: str | os.PathLike[str] = DEFAULT_PATH, daemon: bool = True) -> Config:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (pass --config FILE)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    try:
        return parse(raw, daemon)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
