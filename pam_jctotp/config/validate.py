"""A loaded mapping -> Config: each key as schema.py declares it, then the rules
between keys (fleet_name needs database, the enrollment QR code fits a frame...).

Every problem is reported at once (one ConfigError listing each, with its key
for the line number and, for a misspelt key, a "did you mean").
"""

from __future__ import annotations

import functools
import os
import urllib.parse
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigError
from . import checks
from .checks import Problems, by_yaml_name, did_you_mean, is_block, kinds
from .directory import DirectoryConfig, parse_directory_collect
from .schema import POLICY_KEYS, Config

TESTING_ENV = "JCTOTPD_TESTING"
# The shim's largest frame (transport/pam_wire.MAX_FRAME; a unit test holds
# them equal): the enrollment text with its QR code must fit in one.
PAM_FRAME_LIMIT = 16384


def database_name(uri: str) -> str:
    """The database a libpq URI names (its path; else the dbname parameter; else the
    user's name, as libpq defaults it)."""
    parsed = urlsplit(uri)
    name = unquote(parsed.path.lstrip("/")) or parse_qs(parsed.query).get("dbname", [""])[0]
    return name or unquote(parsed.username or "") or "jctotp"


TESTING_KEYS = ("clock_control", "fast_password_hash")


def _testing(raw: Any, daemon: bool) -> dict[str, bool]:
    if not isinstance(raw, dict) or set(raw) - set(TESTING_KEYS):
        raise ConfigError("config key 'testing': only 'clock_control' and "
                          "'fast_password_hash' (true|false) are allowed")
    values = {}
    for name in TESTING_KEYS:
        enabled = checks.check_type(f"testing.{name}", raw.get(name, False), bool)
        if enabled and daemon and os.environ.get(TESTING_ENV) != "1":
            raise ConfigError(f"config key 'testing.{name}' is for the test suite only; "
                              f"it takes effect only with {TESTING_ENV}=1 in the daemon's "
                              "environment. Remove it from a production config.")
        values[name] = enabled
    return values


# The worst case of a name the enrollment text may carry: 32 characters and a
# trailing '$' (policy.NAME_RE), and a 93-character {host}: a fleet_name (a host
# name is at most 64 bytes, HOST_NAME_MAX). The
# worst e-mail address (policy.EMAIL_RE, EMAIL_MAX) has a 64-character local
# part the URI quotes three bytes a character; a user without one gets
# user@host for {email} (Accounts.account_label).
_WORST_USER = "u" * 32 + "$"
_WORST_HOST = "h" * 93
_WORST_EMAILS = ("{" * 64 + "@" + "d" * 31 + ".org", f"{_WORST_USER}@{_WORST_HOST}")
_ENROLLMENT_PROSE = 1024  # the sentences around the QR code, the key and the URI


def _worst_uris(issuer: str, account_name: str) -> list[str]:
    uris = []
    for email in _WORST_EMAILS:
        account = account_name.format(user=_WORST_USER, host=_WORST_HOST, email=email)
        label = urllib.parse.quote(f"{issuer}:{account}", safe="@:")
        uris.append(f"otpauth://totp/{label}?secret={'A' * 32}&issuer="
                    f"{urllib.parse.quote(issuer)}&algorithm=SHA1&digits=8&period=120")
    return uris


@functools.lru_cache(maxsize=16)
def enrollment_frame_size(issuer: str, account_name: str) -> int:
    """Bytes of the largest enrollment text (QR code, key, URI, prose) these give.
    Cached: two QR codes cost ~30 ms, and a config is parsed again at every reload."""
    from ..core import qr  # lazily: config is imported by every layer
    return max(len(qr.terminal_qr(uri).encode()) + 2 * len(uri) + _ENROLLMENT_PROSE
               for uri in _worst_uris(issuer, account_name))


@functools.lru_cache(maxsize=16)
def enrollment_frame_bound(issuer: str, account_name: str) -> int:
    """At least enrollment_frame_size, in a fifth of its time (every config load, of
    jctotpd and of each jctotp command, checks it): qr.terminal_qr_bound."""
    from ..core import qr
    return max(qr.terminal_qr_bound(uri) + 2 * len(uri) + _ENROLLMENT_PROSE
               for uri in _worst_uris(issuer, account_name))


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
    known = by_yaml_name(Config)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        with problems.collect(str(key)):
            if key not in known:
                raise ConfigError(f"unknown config key {key!r}{did_you_mean(key, known)}; "
                                  "see jctotp.yaml(5) for the key list")
            values[key] = _value(key, value, daemon, problems)
    _between_keys(values, problems)
    return _frame_fits(values, problems), problems


def _value(key: str, value: Any, daemon: bool, problems: Problems) -> Any:
    kind = kinds(Config)[key]
    if kind is dict:
        return _testing(value, daemon)
    if kind is DirectoryConfig:
        directory, found = parse_directory_collect(value)
        for where, message in found:
            problems.add(where, message)
        # A broken block leaves the default (local): the daemon refuses to start anyway.
        return DirectoryConfig() if found else directory
    if is_block(kind):   # password_hash, portal, smtp: blocks of scalar keys
        return kind(**checks.parse_block(kind, value, key, problems))
    return checks.check_value(Config, by_yaml_name(Config)[key], key, value)


def _between_keys(values: dict[str, Any], problems: Problems) -> None:
    """The rules that tie keys together; a key that breaks one is dropped (its default)."""
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
    # The longest user (32), host (93: a fleet_name) and e-mail (100, core/policy.py) must still
    # make a label that fits the enrollment QR code in one frame.
    elif len(account.format(user="u" * 32, host=_WORST_HOST, email="e" * 100)) > 250:
        values.pop("account_name", None)
        problems.add("account_name", "config key 'account_name': with the longest user "
                     "name, host name and e-mail address the label passes 250 characters; "
                     "use each placeholder once")


def _frame_fits(values: dict[str, Any], problems: Problems) -> Config:
    cfg = Config(**values)
    size = enrollment_frame_bound(cfg.issuer, cfg.account_name)
    if size > PAM_FRAME_LIMIT:   # the exact size decides (the bound only spares it)
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
    return cfg


def policy_value(key: str, value: Any) -> Any:
    """One policy key's value, validated by the very rules of the config file (range,
    type, the issuer/account_name checks); ConfigError naming the key. A list key
    also takes one name or "a,b" (from the command line)."""
    if key not in POLICY_KEYS:
        raise ConfigError(f"{key!r} is not a policy key{did_you_mean(key, POLICY_KEYS)} "
                          f"(policy keys: {', '.join(POLICY_KEYS)})")
    if kinds(Config)[key] == checks.STRLIST and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    cfg, problems = parse_collect({key: value}, daemon=False)
    if problems.items:
        raise ConfigError("; ".join(m for _, m in problems.items).replace(
            "config key", "policy key"))
    return getattr(cfg, key)
