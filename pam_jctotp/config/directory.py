"""The `directory:` block of config.yaml: where passwords are checked.

    directory:
      type: ldap                      # default: local (the argon2id table in the store)
      uri: [ldaps://ldap.jumpcloud.com:636]   # tried in order
      ca_file: /etc/ssl/certs/ca-certificates.crt
      base_dn: ou=Users,o=ORG_ID,dc=jumpcloud,dc=com
      user_filter: (&(objectClass=inetOrgPerson)(uid={user}))
      bind_dn: uid=svc-jctotp,ou=Users,o=ORG_ID,dc=jumpcloud,dc=com
      bind_password_file: /etc/jctotp/ldap.pw     # 0600 root; never in config.yaml
      group_attribute: memberOf       # or group_base_dn + group_filter (a group search)
      timeout: 5

Every problem of the block is reported at once, each naming its key. TLS is
the rule: `ldaps://`, or `ldap://` with `start_tls: true`; a plain `ldap://`
only with `allow_insecure: true` AND a loopback host.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .checks import Problems, by_yaml_name, check_value, did_you_mean, key, uris

DEFAULT_USER_FILTER = "(&(objectClass=inetOrgPerson)(uid={user}))"
DEFAULT_GROUP_FILTER = "(&(objectClass=groupOfNames)(member={dn}))"
DEFAULT_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class DirectoryConfig:
    type: str = key("local", choices=("local", "ldap"))
    uri: tuple[str, ...] = key((), parse=uris, doc="tried in order")
    ca_file: str = key(DEFAULT_CA_FILE, path=True)
    base_dn: str = key("")
    user_filter: str = key(DEFAULT_USER_FILTER)
    bind_dn: str | None = key(None)
    bind_password_file: str | None = key(None, path=True, doc="0600 root; never in config.yaml")
    group_attribute: str = key("memberOf")
    group_base_dn: str | None = key(None, doc="set: groups come from a search, not the attribute")
    group_filter: str = key(DEFAULT_GROUP_FILTER)
    timeout: float = key(5.0, range=(0.5, 60), doc="seconds per LDAP operation")
    # The POSIX identity of accounts the daemon makes (create_system_accounts): the
    # attributes that hold it (JumpCloud's and RFC 2307's names).
    uid_number_attribute: str = key("uidNumber")
    gid_number_attribute: str = key("gidNumber")
    home_directory_attribute: str = key("homeDirectory")
    login_shell_attribute: str = key("loginShell")
    start_tls: bool = key(False)
    allow_insecure: bool = key(False, doc="plain ldap:// to a loopback host only")
    password_change_hint: str = key("where your directory account is managed "
                                    "(for JumpCloud: the User Portal)",
                                    doc="where users change a password we cannot change")

    @property
    def is_ldap(self) -> bool:
        return self.type == "ldap"


_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_directory(raw: Any) -> DirectoryConfig:
    """Validate the `directory:` mapping; one ConfigError listing every problem."""
    cfg, problems = parse_directory_collect(raw)
    if problems:
        texts = [message for _, message in problems]
        if len(texts) == 1:
            raise ConfigError(texts[0])
        raise ConfigError(f"{len(texts)} problems in 'directory':\n"
                          + "\n".join(f"  {t}" for t in texts))
    return cfg


def parse_directory_collect(raw: Any) -> tuple[DirectoryConfig, list[tuple[str, str]]]:
    """The block and its problems, each as (key, message): the config's Problems
    collector gives each its line in config.yaml (`directory.uri` -> line 4)."""
    if not isinstance(raw, dict):
        return DirectoryConfig(), [("directory", "config key 'directory': expected a "
                                    "mapping (type: local|ldap, ...)")]
    problems = Problems()
    known = by_yaml_name(DirectoryConfig)
    values: dict[str, Any] = {}
    for name, value in raw.items():
        dotted = f"directory.{name}"
        with problems.collect(dotted):
            if name not in known:
                raise ConfigError(f"unknown config key {dotted!r}"
                                  + did_you_mean(name, known, "directory."))
            values[name] = check_value(DirectoryConfig, known[name], dotted, value)
    found = problems.items
    cfg = DirectoryConfig(**values)
    if cfg.is_ldap:
        found += _ldap_problems(cfg, values)
    elif set(values) - {"type"}:
        extra = sorted(k for k in values if k != "type")
        found.append((f"directory.{extra[0]}", "config keys " + ", ".join(
            f"'directory.{k}'" for k in extra) + " apply only with 'directory.type: ldap'"))
    return cfg, found


def _ldap_problems(cfg: DirectoryConfig, given: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not cfg.uri:
        out.append(("directory", "config key 'directory.uri' is required with type: ldap "
                    "(e.g. [ldaps://ldap.jumpcloud.com:636])"))
    out += _uri_problems(cfg)
    if not cfg.base_dn:
        out.append(("directory", "config key 'directory.base_dn' is required with type: "
                    "ldap (e.g. ou=Users,o=ORG_ID,dc=jumpcloud,dc=com)"))
    out += _filter_problems(cfg)
    if (cfg.bind_dn is None) != (cfg.bind_password_file is None):
        given_one = "bind_dn" if cfg.bind_dn is not None else "bind_password_file"
        out.append((f"directory.{given_one}", "config keys 'directory.bind_dn' and "
                    "'directory.bind_password_file' go together (the password lives in the "
                    "file, never in config.yaml)"))
    if "group_filter" in given and cfg.group_base_dn is None:
        out.append(("directory.group_filter", "config key 'directory.group_filter' needs "
                    "'directory.group_base_dn' (where the group search starts)"))
    return out


def _uri_problems(cfg: DirectoryConfig) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for uri in cfg.uri:
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            out.append(("directory.uri", f"config key 'directory.uri': {uri!r} is not "
                        "ldaps://HOST[:PORT] or ldap://HOST[:PORT]"))
            continue
        if parts.path not in ("", "/") or parts.query:
            out.append(("directory.uri", f"config key 'directory.uri': {uri!r}: put the "
                        "base DN in 'directory.base_dn', not in the URI"))
        if parts.scheme == "ldap" and not cfg.start_tls:
            if not cfg.allow_insecure:
                out.append(("directory.uri", f"config key 'directory.uri': {uri!r} sends "
                            "passwords in clear text: use ldaps://, or set "
                            "'directory.start_tls: true'"))
            elif not is_loopback(parts.hostname):
                out.append(("directory.allow_insecure", "config key "
                            "'directory.allow_insecure' allows a plain ldap:// only to a "
                            f"loopback host, not {parts.hostname!r}"))
    return out


def _filter_problems(cfg: DirectoryConfig) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, placeholder in (("user_filter", "{user}"), ("group_filter", "{dn}")):
        text = getattr(cfg, name)
        try:
            text.format(user="u", dn="d")
            ok = placeholder in text and text.startswith("(") and text.endswith(")")
        except (KeyError, IndexError, ValueError):
            ok = False
        if not ok:
            out.append((f"directory.{name}", f"config key 'directory.{name}': {text!r} must "
                        f"be a parenthesised LDAP filter with {placeholder} (and no other "
                        "{placeholder})"))
    return out
