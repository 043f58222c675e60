"""The manual pages (man/) document every module option, config key, verb and
flag, and render without a warning. No container needed."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pam_jctotp import config as configmod

REPO = Path(__file__).resolve().parents[2]
MAN = REPO / "man"
PAGES = ["pam_jctotp.8", "jctotp.8", "jctotpd.8", "jctotp.yaml.5"]


def text(page: str) -> str:
    """The page's source with roff's escaped hyphens made plain."""
    return (MAN / page).read_text().replace("\\-", "-")


def cli_help(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from pam_jctotp.cli.main import main; sys.exit(main())",
         *args, "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return out.stdout


def choices(help_text: str) -> list[str]:
    """The sub-commands argparse lists under VERB or ACTION (4-space indent)."""
    m = re.search(r"^  (?:VERB|ACTION)\n((?:    .*\n|\s{6,}.*\n)+)", help_text, re.M)
    return re.findall(r"^    ([a-z][a-z-]*)", m.group(1), re.M) if m else []


def test_every_module_option_is_in_pam_jctotp_8():
    source = (REPO / "native/cfg.c").read_text()
    options = set(re.findall(r'opt_value\(arg, "([a-z_]+)"\)', source))
    options |= set(re.findall(r'strcmp\(arg, "([a-z_]+)"\)', source))
    assert options >= {"socket", "timeout", "factors", "failmode", "lockdir",
                       "use_first_pass", "try_first_pass", "debug"}
    page = text("pam_jctotp.8")
    for option in options:
        assert re.search(rf"^\.(?:B|BI|TP\n\.B) {option}\b", page, re.M), option
    # failmode=open: only when nobody listens; after connect, closed.
    assert "ENOENT" in page and "ECONNREFUSED" in page
    assert "fails closed" in page


def test_every_config_key_is_in_jctotp_yaml_5():
    page = text("jctotp.yaml.5")
    for f in configmod.fields(configmod.Config):
        assert re.search(rf"^\.BR? {f.name}\b", page, re.M), f.name
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            default = str(default).lower()
        elif isinstance(default, tuple):
            default = "[]"
        if default is not None and f.name != "password_hash":
            assert f'{f.name} " (default " {default}' in page, f.name
    for sub in configmod.fields(configmod.PasswordHashParams):
        assert f"{sub.name}\n(default {sub.default})" in page, sub.name


def test_every_verb_and_flag_is_in_jctotp_8():
    page = text("jctotp.8")
    top = cli_help()
    verbs = choices(top)
    assert "user" in verbs and "doctor" in verbs
    flags = set(re.findall(r"--[a-z][a-z-]+", top))
    for verb in verbs:
        help_text = cli_help(verb)
        actions = choices(help_text)
        for action in actions:
            assert re.search(rf"^\.B {verb} {action}\b", page, re.M), f"{verb} {action}"
            flags |= set(re.findall(r"--[a-z][a-z-]+", cli_help(verb, action)))
        if not actions:
            assert re.search(rf"^\.B {verb}\b", page, re.M), verb
            flags |= set(re.findall(r"--[a-z][a-z-]+", help_text))
    # Issue 11 and 12 flags, documented before the CLI grows them.
    flags |= {"--enroll-now", "--enrollment-days", "--compromised", "--email", "--exist-ok"}
    for flag in flags - {"--help"}:
        assert flag in page, flag
    assert '\\(dqchanged\\(dq' in page
    for code in (0, 1, 2, 3, 4, 5, 69, 78, 130):
        assert f".B {code}\n" in page, code


def test_jctotpd_8_has_options_signals_and_no_systemd():
    page = text("jctotpd.8")
    for needle in ("--config", "--check", ".B SIGHUP", "SIGTERM", "RUNNING WITHOUT SYSTEMD",
                   "systemctl reload jctotpd", "pgrep -x jctotpd"):
        assert needle in page, needle


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(page):
    if not shutil.which("groff") or not shutil.which("man"):
        if os.environ.get("CI") == "true":
            pytest.fail("groff and man-db are needed to render the manual pages")
        pytest.skip("groff or man-db is not installed")
    groff = subprocess.run(["groff", "-man", "-ww", "-z", str(MAN / page)],
                           capture_output=True, text=True)
    assert groff.returncode == 0 and groff.stderr == "", groff.stderr
    man = subprocess.run(["man", "--warnings", "-l", str(MAN / page)], capture_output=True,
                         text=True, env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_STDERR": "1"})
    assert man.returncode == 0 and man.stderr == "", man.stderr
    assert man.stdout.count("\n") > 20


def test_readme_debian_walks_a_directory_and_a_fleet():
    """Issue 21: README.Debian covers LDAP and the fleet, with the steps a sysadmin
    types (its sections, each with the commands and keys that matter)."""
    readme = (REPO / "packaging" / "deb" / "README.Debian").read_text()
    sections = re.split(r"^\d+[a-z]?\. ", readme, flags=re.M)
    ldap = next(s for s in sections if s.startswith("A directory: LDAP"))
    fleet = next(s for s in sections if s.startswith("A fleet"))
    for needle in ("python3-ldap3", "jctotpd --check --strict", "mfa_groups", "login_groups",
                   "accounts: daemon", "accounts: nss", "break_glass_group",
                   "jctotp break-glass"):
        assert needle in ldap, needle
    for needle in ("python3-psycopg", "jctotp fleet init", "secret.key", "fleet_name",
                   "jctotpd --check --strict", "break_glass_group"):
        assert needle in fleet, needle
