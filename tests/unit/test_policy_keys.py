"""The fleet's policy keys (issue 21): validated with config.py's own rules, the key
named in each error; `local_overrides` names policy keys only; the overlay of the
fleet's values over a host file (fleet/policy.py), with its drift and cache."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from pam_jctotp import config
from pam_jctotp import daemon as jctotpd
from pam_jctotp.errors import ConfigError
from pam_jctotp.fleet.policy import CACHE, FleetPolicy


def test_policy_keys_are_all_applied_by_a_reload():
    assert "max_attempts" in config.POLICY_KEYS and "mfa_groups" in config.POLICY_KEYS
    assert not set(config.POLICY_KEYS) & set(config.RESTART_KEYS)


@pytest.mark.parametrize("key, value, want", [
    ("max_attempts", 3, 3), ("fail_delay", 1, 1.0), ("mfa_groups", "ops, admins",
                                                     ("ops", "admins")),
    ("admin_groups", ["wheel"], ("wheel",)), ("require_mfa_for_all", True, True),
    ("issuer", "jctotp acme", "jctotp acme"), ("mfa_groups", "", ())])
def test_a_good_value_is_taken(key, value, want):
    assert config.policy_value(key, value) == want


@pytest.mark.parametrize("key, value, words", [
    ("max_attempts", 0, "'max_attempts': 0 is out of range (1..100)"),
    ("max_attempts", "three", "'max_attempts': expected an integer"),
    ("unlock_after", -1, "'unlock_after'"), ("issuer", "a:b", "'issuer' must not contain"),
    ("account_name", "{nobody}", "'account_name' must contain {user}"),
    ("require_mfa_for_all", "yes", "'require_mfa_for_all': expected true or false"),
    ("pam_socket", "/x", "'pam_socket' is not a policy key"),
    ("max_atempts", 3, "did you mean 'max_attempts'")])
def test_a_bad_value_is_refused_naming_the_key(key, value, words):
    with pytest.raises(ConfigError) as refused:
        config.policy_value(key, value)
    assert words in str(refused.value)
    assert "config key" not in str(refused.value)


def test_local_overrides_names_policy_keys_only():
    assert config.parse({"local_overrides": ["max_attempts"]}).local_overrides == (
        "max_attempts",)
    with pytest.raises(ConfigError, match="'local_overrides': 'database' is not a policy key"):
        config.parse({"local_overrides": ["database"]})
    # the fleet database enforces host_admin_verbs (store/pg_userwrites.py): a host's
    # file cannot claim an exception
    with pytest.raises(ConfigError, match="'host_admin_verbs' cannot be a local override"):
        config.parse({"local_overrides": ["host_admin_verbs"]})


class FakeFleet:
    def __init__(self) -> None:
        self.rows: dict[str, tuple] = {}

    def fleet_policy(self):
        return [(k, *v) for k, v in sorted(self.rows.items())]

    def set_fleet_policy(self, key, value, actor):
        old = self.rows.get(key, (None,))[0]
        if value is None:
            self.rows.pop(key, None)
        else:
            self.rows[key] = (value, 1.0, actor)
        return old


def make(tmp_path, text: str, fleet=None):
    path = tmp_path / "config.yaml"
    path.write_text(f"state_dir: {tmp_path}\n" + text)
    installed = []
    cfg = config.load(path, daemon=False)
    policy = FleetPolicy(str(path), cfg, fleet, installed.append, jctotpd.restart_keys)
    policy.use_file(cfg)
    return policy, installed


def test_the_fleet_wins_over_the_file_unless_a_local_override(tmp_path):
    fleet = FakeFleet()
    policy, installed = make(tmp_path, "max_attempts: 6\nfail_delay: 1\n", fleet)
    policy.change("max_attempts", 3, "root")
    with pytest.raises(ConfigError, match="'fail_delay': expected a number"):
        policy.change("fail_delay", "0.5", "root")   # the CLI sends YAML's 0.5, not "0.5"
    assert "fail_delay" not in fleet.rows
    assert installed[-1].max_attempts == 3
    shown = {k["key"]: k for k in policy.show()["keys"]}
    assert shown["max_attempts"]["drift"] and shown["max_attempts"]["file"] == 6
    assert policy.show()["drift"][0].startswith("policy key max_attempts: this host's file "
                                                "says 6, the fleet database 3")
    assert not shown["unlock_after"]["drift"] and shown["unlock_after"]["source"] == "default"
    new = config.parse({**yaml.safe_load((tmp_path / "config.yaml").read_text()),
                        "local_overrides": ["max_attempts"]}, daemon=False)
    policy.use_file(new)
    assert installed[-1].max_attempts == 6


def test_a_bad_value_in_the_database_is_ignored_and_the_cache_kept(tmp_path):
    fleet = FakeFleet()
    fleet.rows["max_attempts"] = (0, 1.0, "x")        # past `policy set`'s checks
    fleet.rows["unlock_after"] = (60, 1.0, "root@a")
    policy, installed = make(tmp_path, "", fleet)
    policy.refresh()
    assert installed[-1].max_attempts == 5 and installed[-1].unlock_after == 60
    cache = tmp_path / CACHE
    assert os.stat(cache).st_mode & 0o777 == 0o600
    assert json.loads(cache.read_text())["unlock_after"][0] == 60
    again, installed = make(tmp_path, "", FakeFleet())   # restarted, database down
    assert installed[-1].unlock_after == 60


def test_one_host_shows_its_file_and_refuses_set(tmp_path):
    policy, _ = make(tmp_path, "max_attempts: 4\n")
    shown = policy.show()
    assert not shown["fleet"] and not shown["drift"]
    assert {k["key"]: k["running"] for k in shown["keys"]}["max_attempts"] == 4
    with pytest.raises(Exception, match="needs a fleet database"):
        policy.change("max_attempts", 3, "root")


@pytest.mark.parametrize("typed, want", [
    ("{user}", "{user}"), ("{user}@acme", "{user}@acme"), ("'{user}'", "{user}"),
    ("3", 3), ("[mfa, admins]", ["mfa", "admins"]), ("jctotp acme", "jctotp acme")])
def test_policy_set_takes_a_template_as_typed(typed, want):
    """`jctotp policy set account_name {user}`: YAML reads `{user}` as a mapping, which
    the key then refused ("got {'user': None}"); no policy key is a mapping, so the
    text as typed is sent, and config.py's own check accepts it."""
    from pam_jctotp.cli.main import _build_parser
    from pam_jctotp.cli.requests import build_request

    verb, body = build_request(_build_parser().parse_args(["policy", "set", "account_name",
                                                           typed]))
    assert verb == "policy.set" and body == {"key": "account_name", "value": want}
    if typed.startswith(("{", "'")):
        assert config.policy_value("account_name", body["value"]) == want
