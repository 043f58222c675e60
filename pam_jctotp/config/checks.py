"""How one config key is declared (`key()`) and checked from that declaration.

A key's type is its annotation; everything else (range, choices, absolute
path, restart-only, a check of its own) is the `Key` in the field's metadata.
The collector (`Problems`) gathers every problem of a file, each with the key
that gives its line.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import os
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError
from ..printable import redact_dsn

Check = Callable[[str, Any], Any]
# A value's type, from the annotation: bool, int, float, str, STRLIST, or a block (a
# dataclass of keys, or dict for `testing:`).
STRLIST = "strlist"


@dataclass(frozen=True)
class Key:
    """What a key is beyond its type and default."""

    range: tuple[float, float] | None = None   # inclusive bounds of a number
    why: str = ""                               # said after an out-of-range value
    choices: tuple[str, ...] = ()               # the only values allowed
    path: bool = False                          # an absolute path
    restart: bool = False                       # a reload keeps the running value
    policy: bool = False                        # `jctotp policy set` may set it fleet-wide
    secret: bool = False                        # messages show it redacted (redact_dsn)
    parse: Check | None = None                  # replaces the type check (raw -> value)
    check: Check | None = None                  # after the type check: value -> value
    together: str = ""                          # a key of the same block: both or neither
    yaml: str = ""                              # the YAML spelling, if not the field's name
    doc: str = ""                               # one line: what it is for


def key(default: Any = MISSING, *, factory: Callable[[], Any] | None = None,
        **meta: Any) -> Any:
    """A dataclass field with its Key: `x: int = key(5, range=(1, 10), doc="...")`."""
    metadata = {"key": Key(**meta)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def meta(f: dataclasses.Field[Any]) -> Key:
    found = f.metadata.get("key")
    if not isinstance(found, Key):
        raise AssertionError(f"config field {f.name!r} is not declared with key()")
    return found


def yaml_name(f: dataclasses.Field[Any]) -> str:
    return meta(f).yaml or f.name


@functools.cache
def kinds(cls: type) -> dict[str, Any]:
    """Field name -> kind, read from the annotations (`str | None` is str)."""
    out: dict[str, Any] = {}
    for name, hint in typing.get_type_hints(cls).items():
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if typing.get_origin(hint) is tuple:
            hint = STRLIST
        elif typing.get_origin(hint) is dict:
            hint = dict
        out[name] = hint
    return out


@functools.cache
def by_yaml_name(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {yaml_name(f): f for f in dataclasses.fields(cls)}


def is_block(kind: Any) -> bool:
    return kind is dict or dataclasses.is_dataclass(kind)


class Problems:
    """Every problem of one file, each with its key (for the line number)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []   # (key, message)

    def add(self, key: str, message: str) -> None:
        self.items.append((key, message))

    def collect(self, key: str) -> _Collect:
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


def did_you_mean(key: object, known: Any, prefix: str = "") -> str:
    close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""


def check_range(key: str, value: Any, checked: float, lo: float, hi: float,
                why: str = "") -> None:
    if not lo <= checked <= hi:
        raise ConfigError(f"config key {key!r}: {value} is out of range ({lo}..{hi})"
                          + (f": {why}" if why else ""))


def check_type(key: str, value: Any, want: Any, shown: Any = None) -> Any:
    shown = value if shown is None else shown
    if want is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected true or false, got {shown!r}")
        return value
    if want is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r}: expected an integer, got {shown!r}")
        return value
    if want is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected a number, got {shown!r}")
        return float(value)
    if want is str:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"config key {key!r}: expected a non-empty string, got {shown!r}")
        return value
    if want == STRLIST:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"config key {key!r}: expected a list of strings, got {shown!r}")
        return tuple(value)
    raise AssertionError(want)


def check_value(cls: type, f: dataclasses.Field[Any], name: str, value: Any) -> Any:
    """One scalar key of `cls`, checked as its declaration says."""
    k = meta(f)
    shown = redact_dsn(value) if k.secret and isinstance(value, str) else value
    checked = k.parse(name, value) if k.parse else check_type(name, value, kinds(cls)[f.name],
                                                              shown)
    if k.range:
        check_range(name, shown, checked, *k.range, why=k.why)
    if k.choices and checked not in k.choices:
        raise ConfigError(f"config key {name!r}: {shown!r} is not one of {', '.join(k.choices)}")
    if k.path and not os.path.isabs(checked):
        raise ConfigError(f"config key {name!r}: {shown!r} must be an absolute path")
    return k.check(name, checked) if k.check else checked


def parse_block(cls: type, raw: Any, prefix: str, problems: Problems) -> dict[str, Any]:
    """The valid keys of one `prefix:` mapping of scalar keys (portal, smtp, ...), by
    field name; each problem goes to `problems` under its dotted key."""
    spec = by_yaml_name(cls)
    if not isinstance(raw, dict):
        raise ConfigError(f"config key {prefix!r}: expected a mapping ({', '.join(spec)})")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        dotted = f"{prefix}.{name}"
        with problems.collect(dotted):
            f = spec.get(name)
            if f is None:
                raise ConfigError(f"unknown config key {dotted!r}{did_you_mean(name, spec)}")
            values[f.name] = check_value(cls, f, dotted, value)
    for f in dataclasses.fields(cls):
        other = meta(f).together
        if other and (f.name in values) != (other in values):
            given = f.name if f.name in values else other
            values.pop(given)
            problems.add(f"{prefix}.{given}", f"config keys '{prefix}.{f.name}' and "
                         f"'{prefix}.{other}' go together")
    return values


# --- checks of one key's value (Key.check / Key.parse) ---------------------------------

def database_uri(key: str, uri: str) -> str:
    """A libpq URI without a password: that lives in a passfile or a client cert."""
    parsed = urlsplit(uri)
    if parsed.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"config key {key!r}: {redact_dsn(uri)!r} is not a libpq URI "
                          "(postgresql://user@host/dbname?sslmode=verify-full)")
    if parsed.password is not None or "password" in parse_qs(parsed.query):
        raise ConfigError(f"config key {key!r} must not contain a password: use libpq's "
                          "passfile (~/.pgpass, or ?passfile=PATH) or a client certificate")
    return uri


def loopback_address(value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) -> (host, port); ValueError unless a loopback IP."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected 127.0.0.1:PORT")
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError("not a loopback address")
    return host, int(port)


def loopback(key: str, value: str) -> str:
    """metrics_listen: the root daemon's metrics are for this host's scraper only."""
    try:
        loopback_address(value)
    except ValueError as exc:
        raise ConfigError(f"config key {key!r}: {value!r}: {exc} (only a loopback "
                          "address, e.g. 127.0.0.1:9877; node_exporter's textfile collector "
                          "with metrics_textfile opens no port at all)") from None
    return value


def host_port(key: str, value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"config key {key!r}: {value!r} is not HOST:PORT "
                          "(e.g. 127.0.0.1:8443)")
    return value


def http_url(key: str, value: str) -> str:
    url = urlsplit(value)
    if url.scheme not in ("https", "http") or not url.netloc or url.query:
        raise ConfigError(f"config key {key!r}: {value!r} is not an http(s) URL "
                          "(e.g. https://mfa.example.org)")
    return value.rstrip("/")


def email(key: str, value: str) -> str:
    if "@" not in value or any(c in value for c in "\r\n<>"):
        raise ConfigError(f"config key {key!r}: {value!r} is not an e-mail address")
    return value


def cidrs(key: str, value: tuple[str, ...]) -> tuple[str, ...]:
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"config key {key!r}: {cidr!r} is not a CIDR "
                              "(e.g. 192.0.2.0/24)") from None
    return value


def uris(key: str, value: Any) -> tuple[str, ...]:
    """One URI or a list of them (tried in order)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(
            isinstance(u, str) and u for u in items):
        raise ConfigError(f"config key {key!r}: expected a URI or a list of URIs "
                          "(ldaps://host:636)")
    return tuple(items)
