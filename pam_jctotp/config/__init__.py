"""/etc/jctotp/config.yaml: every key, its type, default and bounds.

Validated at start and on SIGHUP; every unknown key or bad value is reported
at once (one ConfigError listing each problem with its line and, for a
misspelt key, a "did you mean"). Secrets never live here (the key that
encrypts TOTP secrets is a file in `state_dir`).

    schema.py     every key, declared once (type, default, range, choices, ...)
    checks.py     key() and the checks a declaration implies; the problem collector
    directory.py  the `directory:` block and its LDAP rules
    validate.py   a mapping -> Config, and the rules between keys
    loader.py     the file: YAML, duplicate keys, line numbers
"""

from dataclasses import fields

from ..errors import ConfigError
from .checks import Key, Problems, key, loopback_address
from .checks import check_range as _check_range
from .checks import check_type as _check_type
from .checks import did_you_mean as _did_you_mean
from .directory import DirectoryConfig, parse_directory, parse_directory_collect
from .loader import DEFAULT_PATH, UniqueKeyLoader, key_lines, load, load_collect, load_with_text
from .schema import (
    _ENUMS,
    _HASH_KEYS,
    _PATHS,
    _PORTAL_RANGES,
    _RANGES,
    _SMTP_TYPES,
    _TYPES,
    POLICY_KEYS,
    RESTART_KEYS,
    Config,
    PasswordHashParams,
    PortalConfig,
    SmtpConfig,
    restart_keys,
    walk,
)
from .validate import (
    PAM_FRAME_LIMIT,
    TESTING_ENV,
    database_name,
    enrollment_frame_size,
    parse,
    parse_collect,
    policy_value,
)

__all__ = [
    "DEFAULT_PATH", "PAM_FRAME_LIMIT", "POLICY_KEYS", "RESTART_KEYS",
    "TESTING_ENV",
    "Config", "ConfigError", "DirectoryConfig", "Key", "PasswordHashParams", "PortalConfig",
    "Problems", "SmtpConfig", "UniqueKeyLoader", "_ENUMS", "_HASH_KEYS", "_PATHS",
    "_PORTAL_RANGES", "_RANGES", "_SMTP_TYPES", "_TYPES", "_check_range", "_check_type",
    "_did_you_mean", "database_name", "enrollment_frame_size", "fields", "key", "key_lines",
    "load", "load_collect", "load_with_text", "loopback_address", "parse", "parse_collect",
    "parse_directory", "parse_directory_collect", "policy_value", "restart_keys", "walk",
]
