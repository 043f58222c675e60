"""Issue 21: `fleet_name` (default: the fleet database's name) names the authenticator
app's entry, so a user enrolled on any host of the fleet sees one issuer."""

from __future__ import annotations

import pytest

from pam_jctotp import config as configmod
from pam_jctotp.errors import ConfigError


def load(tmp_path, text: str) -> configmod.Config:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return configmod.load(path, daemon=False)


def test_the_default_issuer_of_a_fleet_is_the_database_name(tmp_path):
    cfg = load(tmp_path, "database: postgresql://jctotp@db.example/acme_prod\n")
    assert cfg.fleet_name == "acme_prod" and cfg.issuer == "jctotp acme_prod"


def test_fleet_name_names_the_issuer(tmp_path):
    cfg = load(tmp_path, "database: postgresql://jctotp@db.example/x\nfleet_name: Acme\n")
    assert cfg.issuer == "jctotp Acme"


def test_an_explicit_issuer_wins(tmp_path):
    cfg = load(tmp_path, "database: postgresql://jctotp@db.example/x\nfleet_name: Acme\n"
                         "issuer: Acme SSH\n")
    assert cfg.issuer == "Acme SSH" and cfg.fleet_name == "Acme"


def test_a_single_host_keeps_its_host_name(tmp_path):
    cfg = load(tmp_path, "max_attempts: 5\n")
    assert cfg.fleet_name is None and cfg.issuer.startswith("jctotp ")


@pytest.mark.parametrize("text", ["fleet_name: Acme\n",   # no database: no fleet
                                  "database: postgresql://j@h/x\nfleet_name: 'a:b'\n",
                                  "database: postgresql://j@h/x\nfleet_name: " + "a" * 94 + "\n"])
def test_a_bad_fleet_name_is_named(tmp_path, text):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert "fleet_name" in str(err.value.problems)
