"""The config schema (pam_jctotp/config/schema.py): every key is declared once, and
the tables the validator and the daemon use (ranges, enums, paths, types, restart
keys) say what parse() really does."""

from __future__ import annotations

import dataclasses
import os
from functools import reduce
from typing import Any

import pytest

from pam_jctotp import config, daemon
from pam_jctotp.config import checks, schema

KEYS = list(config.walk())
# A block whose keys need company to be valid at all.
BASE: dict[str, dict[str, Any]] = {
    "directory": {"type": "ldap", "uri": "ldaps://ldap.example.com", "base_dn": "dc=example"},
}


def raw_for(dotted: str, value: Any) -> dict[str, Any]:
    head, _, tail = dotted.partition(".")
    return {head: {**BASE.get(head, {}), tail: value}} if tail else {head: value}


def field_of(dotted: str) -> tuple[type, dataclasses.Field[Any]]:
    return next((cls, f) for name, cls, f in KEYS if name == dotted)


def outcome(dotted: str, value: Any) -> tuple[Any, list[str]]:
    """The value parse() kept for the key, and the problems naming it."""
    cfg, problems = config.parse_collect(raw_for(dotted, value), daemon=False)
    cls, f = field_of(dotted)
    kept = reduce(getattr, dotted.split(".")[:-1], cfg)
    return getattr(kept, f.name), [m for _, m in problems.items if repr(dotted) in m]


@pytest.mark.parametrize("dotted, cls, f", KEYS, ids=[k[0] for k in KEYS])
def test_every_key_has_a_type_and_a_default_its_declaration_accepts(dotted, cls, f):
    k = checks.meta(f)    # declared with key()
    kind = checks.kinds(cls)[f.name]
    assert kind in (bool, int, float, str, checks.STRLIST) or checks.is_block(kind), kind
    has_factory = f.default_factory is not dataclasses.MISSING
    assert (f.default is not dataclasses.MISSING) != has_factory, dotted
    default = f.default_factory() if has_factory else f.default
    if k.range:
        lo, hi = k.range
        assert kind in (int, float) and lo <= default <= hi, dotted
    if k.choices:
        assert default in k.choices, dotted
    if k.path:
        assert kind is str and (default is None or os.path.isabs(default)), dotted
    if k.together:
        assert k.together in {g.name for g in dataclasses.fields(cls)}, dotted
    assert not (k.restart and k.policy), dotted   # the fleet's policy applies without one


def test_the_old_tables_are_derived_from_the_declarations():
    top = {name: f for name, cls, f in KEYS if cls is config.Config}
    assert {n: checks.meta(f).range for n, f in top.items()
            if checks.meta(f).range} == config._RANGES
    assert {n: checks.meta(f).choices for n, f in top.items()
            if checks.meta(f).choices} == config._ENUMS
    assert set(config._PATHS) == {n for n, f in top.items() if checks.meta(f).path}
    assert set(config._TYPES) == set(top) - {"password_hash", "directory", "portal", "smtp",
                                             "testing"}
    assert set(config._SMTP_TYPES) == {"host", "port", "starttls", "from", "username",
                                       "password_file", "templates"}
    assert set(config._PORTAL_RANGES) == {"session_idle_minutes", "session_lifetime_minutes",
                                          "signins_per_minute"}


RANGED = [(name, checks.meta(f).range) for name, _, f in KEYS if checks.meta(f).range]


def test_the_ranges_cover_every_block():
    assert {"totp_digits", "portal.signins_per_minute", "smtp.port",
            "password_hash.memory_kib", "directory.timeout"} <= {n for n, _ in RANGED}


@pytest.mark.parametrize("dotted, bounds", RANGED, ids=[r[0] for r in RANGED])
def test_each_range_accepts_its_bounds_and_refuses_beyond(dotted, bounds):
    cls, f = field_of(dotted)
    step = 1 if checks.kinds(cls)[f.name] is int else 0.01
    lo, hi = bounds
    for inside in (lo, hi):
        kept, problems = outcome(dotted, inside)
        assert kept == inside and not [p for p in problems if "range" in p], (inside, problems)
    for outside in (lo - step, hi + step):
        kept, problems = outcome(dotted, outside)
        assert kept != outside and any("range" in p for p in problems), (outside, problems)


ENUMS = [(name, checks.meta(f).choices) for name, _, f in KEYS if checks.meta(f).choices]


@pytest.mark.parametrize("dotted, choices", ENUMS, ids=[e[0] for e in ENUMS])
def test_each_enum_accepts_its_choices_only(dotted, choices):
    for choice in choices:
        assert not [p for p in outcome(dotted, choice)[1] if "not one of" in p]
    kept, problems = outcome(dotted, "sometimes")
    assert kept != "sometimes" and any("not one of" in p for p in problems)


PATHS = [name for name, _, f in KEYS if checks.meta(f).path]


@pytest.mark.parametrize("dotted", PATHS)
def test_each_path_key_wants_an_absolute_path(dotted):
    assert not [p for p in outcome(dotted, "/etc/jctotp/x")[1] if "absolute" in p]
    kept, problems = outcome(dotted, "etc/jctotp/x")
    assert kept != "etc/jctotp/x" and any("absolute" in p for p in problems)


PAIRS = [(name, checks.meta(f).together) for name, _, f in KEYS if checks.meta(f).together]


@pytest.mark.parametrize("dotted, other", PAIRS)
def test_keys_that_go_together(dotted, other):
    block = dotted.rpartition(".")[0]
    for alone in (dotted, f"{block}.{other}"):
        _, problems = outcome(alone, "/etc/jctotp/x")
        assert any("go together" in p and f"'{block}.{other}'" in p for p in problems), alone


def test_restart_keys_come_from_the_declarations():
    """The keys a reload cannot apply (before: a hand-kept tuple in daemon.py)."""
    assert set(schema.RESTART_KEYS) == {
        "pam_socket", "control_socket", "state_dir", "max_connections", "pam_processes",
        "password_hash", "testing", "directory", "database", "secret_key_file", "host_name",
        "break_glass_group", "smtp", "database_pgbouncer", "database_pool_min",
        "database_pool_max", "fleet_sync_interval", "metrics_textfile", "metrics_interval",
        "metrics_listen", "accounts", "directory_sync_interval"}
    local = config.parse({})
    ldap = config.parse({"directory": BASE["directory"]})
    assert daemon.restart_keys(local) == schema.RESTART_KEYS
    # the group keys apply on reload with LDAP too (daemon.swap hands it their DNs)
    assert daemon.restart_keys(ldap) == schema.RESTART_KEYS


def test_a_yaml_spelling_other_than_the_field_name():
    """smtp's `from` is a Python keyword: the field is from_address."""
    assert config.parse({"smtp": {"from": "mfa@example.org"}}).smtp.from_address \
        == "mfa@example.org"
    assert "'smtp.from_address'" in str(pytest.raises(config.ConfigError, config.parse,
                                                      {"smtp": {"from_address": "a@b"}}).value)


@dataclasses.dataclass(frozen=True)
class Secretive:
    dsn: str = checks.key("x", secret=True, choices=("x",))


def test_a_secret_key_is_redacted_in_generic_messages():
    """A key declared secret (database) is shown redacted by every generic check."""
    assert checks.meta(field_of("database")[1]).secret
    with pytest.raises(config.ConfigError) as exc:
        checks.check_value(Secretive, dataclasses.fields(Secretive)[0], "dsn",
                           "postgresql://u:hunter2@db/j")
    assert "'dsn'" in str(exc.value) and "hunter2" not in str(exc.value)
