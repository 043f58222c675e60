"""Config validation: pam_jctotp/config/."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import fields

import pytest
import yaml
from harness import World
from testlib import REPO

from pam_jctotp import config
from pam_jctotp.config import Config, ConfigError, PasswordHashParams
from pam_jctotp.core.steps import Info
from pam_jctotp.core.totp import Totp
from pam_jctotp.printable import PrintableFormatter
from pam_jctotp.transport import pam_wire as protocol


def test_defaults():
    cfg = config.parse({}, daemon=True)
    assert cfg == config.parse(None)
    assert cfg.pam_socket == "/run/jctotp/pam.sock"
    assert cfg.control_socket == "/run/jctotp/control.sock"
    assert cfg.state_dir == "/var/lib/jctotp"
    assert (cfg.totp_digits, cfg.totp_period, cfg.totp_window) == (6, 30, 1)
    assert cfg.password_hash == PasswordHashParams(19456, 2, 1)
    assert not cfg.clock_control
    assert not cfg.require_mfa_for_all
    assert cfg.unknown_users == "refuse"
    assert str(cfg.db_path) == "/var/lib/jctotp/jctotp.db"
    assert str(cfg.key_path) == "/var/lib/jctotp/secret.key"
    assert cfg.issuer.startswith("jctotp ")


def test_every_key_round_trips():
    raw = {"pam_socket": "/tmp/p.sock", "max_attempts": 3, "fail_delay": 0,
           "admin_groups": ["wheel"], "exempt_sources": ["10.0.0.0/8", "2001:db8::/32"],
           "password_hash": {"memory_kib": 65536, "time_cost": 3}, "unlock_after": 0,
           "audit_failure": "deny", "log_level": "debug", "unknown_users": "ignore"}
    cfg = config.parse(raw)
    assert cfg.admin_groups == ("wheel",)
    assert cfg.fail_delay == 0.0 and isinstance(cfg.fail_delay, float)
    assert cfg.password_hash == PasswordHashParams(65536, 3, 1)
    assert [str(n) for n in cfg.exempt_networks] == ["10.0.0.0/8", "2001:db8::/32"]


def error(raw, daemon=True) -> str:
    with pytest.raises(ConfigError) as exc:
        config.parse(raw, daemon=daemon)
    return str(exc.value)


def test_unknown_key_is_named():
    assert "'pam_sokcet'" in error({"pam_sokcet": "/x"})
    assert "'password_hash.memory'" in error({"password_hash": {"memory": 65536}})
    assert "'testing'" in error({"testing": {"fast": True}})


WRONG_TYPES = {
    "pam_socket": 5, "state_dir": "", "audit_syslog": "yes", "issuer": None,
    "totp_digits": "6", "totp_period": 30.0, "totp_window": True, "max_attempts": [5],
    "fail_interval": None, "unlock_after": "0", "fail_delay": "2", "admin_groups": "wheel",
    "exempt_groups": [1], "exempt_sources": [""], "require_mfa_for_all": 1,
    "default_enrollment_days": 7.5, "enrollment_attempts": False, "recovery_codes": {},
    "host_admin_verbs": "no",
    "create_system_accounts": "true", "max_connections": 1e3, "answer_timeout": "120",
    "pam_processes": "2",
    "password_hash": [1],
    "testing": True, "log_level": 1, "audit_failure": False, "unknown_users": [],
    "account_name": 0, "control_socket": b"/x", "audit_log": 0.5,
    "database": 5, "secret_key_file": True, "host_name": [], "break_glass_group": 1,
    "mfa_groups": "mfa", "directory": "ldap", "portal": "yes", "password_reset_minutes": "30",
    "smtp": "localhost", "enrollment_reminder_days": "2",
    "break_glass_max_age": "4h", "break_glass_password_max_age": "7d", "fleet_name": 7,
    "database_pgbouncer": "yes", "database_pool_min": 1.5, "database_pool_max": "8",
    "fleet_sync_interval": "2", "metrics_textfile": 5, "metrics_interval": [15],
    "metrics_listen": 9877, "local_overrides": "max_attempts",
    "login_groups": "staff", "accounts": ["nss"], "directory_sync_interval": "300",
}


def test_the_wrong_type_table_covers_every_key():
    assert set(WRONG_TYPES) == {f.name for f in fields(Config)}


@pytest.mark.parametrize("key, value", sorted(WRONG_TYPES.items()))
def test_wrong_type_is_named(key, value):
    assert repr(key) in error({key: value})


OUT_OF_RANGE = [
    ("totp_digits", 5), ("totp_digits", 9), ("totp_period", 14), ("totp_period", 121),
    ("totp_window", -1), ("totp_window", 11), ("max_attempts", 0), ("max_attempts", 101),
    ("fail_interval", 0), ("unlock_after", -1), ("fail_delay", -0.1), ("fail_delay", 31),
    ("fail_delay", float("nan")), ("fail_delay", float("inf")),
    ("default_enrollment_days", 0), ("default_enrollment_days", 366),
    ("enrollment_attempts", 0), ("recovery_codes", 51), ("max_connections", 0),
    ("password_reset_minutes", 4),
    ("break_glass_max_age", 59), ("break_glass_max_age", 86400 * 30 + 1),
    ("break_glass_password_max_age", 59), ("break_glass_password_max_age", 86400 * 365 + 1),
    ("answer_timeout", 9), ("answer_timeout", 3601),
]


@pytest.mark.parametrize("key, value", OUT_OF_RANGE)
def test_out_of_range_is_named(key, value):
    message = error({key: value})
    assert repr(key) in message and "range" in message


@pytest.mark.parametrize("key", ["audit_failure", "log_level", "unknown_users"])
def test_bad_enum_is_named(key):
    message = error({key: "sometimes"})
    assert repr(key) in message and "not one of" in message


@pytest.mark.parametrize("uri, why", [
    ("mysql://db/jctotp", "not a libpq URI"),
    ("postgresql://jctotp:hunter2@db/jctotp", "must not contain a password"),
    ("postgresql://jctotp@db/jctotp?password=hunter2", "must not contain a password"),
])
def test_database_is_a_libpq_uri_without_a_password(uri, why):
    message = error({"database": uri})
    assert "'database'" in message and why in message and "hunter2" not in message


def test_fleet_keys():
    cfg = config.parse({"database": "postgresql://jctotp@db.example.org/jctotp?sslmode=verify-full",
                 "secret_key_file": "/etc/jctotp/fleet.key", "host_name": "web1"})
    assert str(cfg.key_path) == "/etc/jctotp/fleet.key" and cfg.host_name == "web1"
    assert config.parse({}).database is None
    assert str(config.parse({"state_dir": "/s"}).key_path) == "/s/secret.key"


@pytest.mark.parametrize("key", ["pam_socket", "control_socket", "state_dir", "audit_log",
                                 "secret_key_file"])
def test_relative_path_is_refused(key):
    message = error({key: "run/x"})
    assert repr(key) in message and "absolute" in message


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "example.com", "10.0.0.300", "::g/64"])
def test_bad_cidr_is_named(cidr):
    message = error({"exempt_sources": ["192.0.2.0/24", cidr]})
    assert "'exempt_sources'" in message and repr(cidr) in message


def test_host_bits_in_a_cidr_are_tolerated():
    assert [str(n) for n in config.parse({"exempt_sources": ["192.0.2.7/24"]}).exempt_networks] \
        == ["192.0.2.0/24"]


@pytest.mark.parametrize("name", ["{host}", "fixed", "{user}@{hostname}", "{0}{user}",
                                  "{user", "{user.x}"])
def test_account_name_must_format_with_user_and_host(name):
    """Checked at start: a bad placeholder must not surface as a crash at enrollment."""
    assert "'account_name'" in error({"account_name": name})


@pytest.mark.parametrize("key, value", [("issuer", "ACME: prod"), ("account_name", "{user}:x")])
def test_a_colon_would_split_the_otpauth_label(key, value):
    assert repr(key) in error({key: value})


@pytest.mark.parametrize("key", ["issuer", "account_name"])
def test_issuer_and_account_name_length(key):
    assert config.parse({key: "{user}" + "x" * 94})
    assert repr(key) in error({key: "{user}" + "x" * 95})


def assert_enrollment_fits(tmp_path, issuer: str, account_name: str, name: str = "u" * 32,
                           email: str | None = None) -> None:
    """The enrollment text these settings give `name` (on the longest host,
    HOST_NAME_MAX) travels in one PAM frame."""
    world = World(tmp_path, {"issuer": issuer, "account_name": account_name})
    world.acc.host = "h" * 64
    if email is not None:
        world.add(name, mfa="off")
        world.store.update(name, email=email)
    text = world.acc.enrollment_text(name, Totp.new_secret())
    world.close()
    assert protocol.encode_step(Info("Multi-factor authentication is required for your "
                                     "account; 365 day(s) left to set it up.\n" + text))


def test_the_longest_enrollment_text_fits_in_one_frame(tmp_path):
    """A QR code of the longest issuer/account still travels in one frame."""
    assert_enrollment_fits(tmp_path, "i" * 100, "{user}@{host}" + "a" * 87)


def test_account_name_with_host():
    assert config.parse({"account_name": "{user}@{host}.example"}).account_name


@pytest.mark.parametrize("key, weak", [("memory_kib", 19455), ("time_cost", 1),
                                       ("parallelism", 0)])
def test_password_hash_weaker_than_owasp_is_refused(key, weak):
    message = error({"password_hash": {key: weak}})
    assert f"'password_hash.{key}'" in message and "OWASP" in message


def test_password_hash_wrong_type():
    assert "'password_hash.time_cost'" in error({"password_hash": {"time_cost": "2"}})
    assert "'password_hash'" in error({"password_hash": "argon2id"})


class TestClockControlFence:
    RAW = {"testing": {"clock_control": True}}

    def test_refused_without_the_environment(self, monkeypatch):
        monkeypatch.delenv(config.TESTING_ENV, raising=False)
        message = error(self.RAW)
        assert "'testing.clock_control'" in message and config.TESTING_ENV in message

    @pytest.mark.parametrize("value", ["0", "true", "yes", ""])
    def test_only_exactly_1_opens_the_fence(self, monkeypatch, value):
        monkeypatch.setenv(config.TESTING_ENV, value)
        error(self.RAW)

    def test_accepted_with_the_environment(self, monkeypatch):
        monkeypatch.setenv(config.TESTING_ENV, "1")
        assert config.parse(self.RAW).clock_control

    def test_the_cli_skips_the_fence(self, monkeypatch):
        monkeypatch.delenv(config.TESTING_ENV, raising=False)
        assert config.parse(self.RAW, daemon=False).clock_control

    def test_false_needs_no_environment(self, monkeypatch):
        monkeypatch.delenv(config.TESTING_ENV, raising=False)
        assert not config.parse({"testing": {"clock_control": False}}).clock_control

    def test_wrong_type(self, monkeypatch):
        monkeypatch.setenv(config.TESTING_ENV, "1")
        assert "'testing.clock_control'" in error({"testing": {"clock_control": "yes"}})


def test_fast_password_hash_is_fenced_like_clock_control(monkeypatch):
    """testing.fast_password_hash (the test suite's argon2id at 1 MiB, one pass): refused
    without JCTOTPD_TESTING=1; password_hash (OWASP's floor) is what counts otherwise."""
    raw = {"testing": {"fast_password_hash": True}}
    monkeypatch.delenv(config.TESTING_ENV, raising=False)
    message = error(raw)
    assert "'testing.fast_password_hash'" in message and config.TESTING_ENV in message
    assert config.parse({}).password_params == PasswordHashParams(19456, 2, 1)
    strong = {"password_hash": {"memory_kib": 65536, "time_cost": 3}}
    assert config.parse(strong).password_params == PasswordHashParams(65536, 3, 1)
    monkeypatch.setenv(config.TESTING_ENV, "1")
    assert config.parse({**raw, **strong}).password_params == PasswordHashParams(1024, 1, 1)
    assert "'testing.fast_password_hash'" in error({"testing": {"fast_password_hash": 1}})


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_yaml(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="mapping"):
        config.load(path)


def test_empty_file_means_defaults(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("# nothing set\n")
    assert config.load(path) == config.parse({})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("pam_socket: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(path)


def test_invalid_yaml_is_one_line_with_its_line_and_column(tmp_path):
    # The journal escapes newlines as \x0a: a PyYAML error must be one line.
    path = tmp_path / "config.yaml"
    path.write_text("issuer: x\nadmin_groups: [sudo\ndefault_enrolment_days: 3\n")
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    assert "\n" not in text and "<unicode string>" not in text
    assert "line 3, column 23" in text and "from line 2" in text and "expected ',' or ']'" in text


def test_not_utf8(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"issuer: \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(path)


def test_load_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("max_attempts: 0\n")
    with pytest.raises(ConfigError, match=rf"^{path}: line 1: config key 'max_attempts'"):
        config.load(path)


BROKEN = """\
# a comment
max_atempts: 3
issuer: ACME
fail_delay: -1
password_hash:
  memory_kb: 65536
unknown_user: ignore
"""


def load_error(tmp_path, text: str):
    """config.load of `text`: the file's path, the problems and the whole message."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    return path, exc.value.problems, str(exc.value)


def test_every_problem_at_once_with_its_line_and_a_suggestion(tmp_path):
    """Issue 12 bug 4: all errors in one report, each with its line; a typo
    gets a "did you mean" (it stopped at the first, with no line, before)."""
    path, problems, message = load_error(tmp_path, BROKEN)
    assert len(problems) == 4, problems
    assert problems[0] == (f"{path}: line 2: unknown config key 'max_atempts' (did you mean "
                           "'max_attempts'?); see jctotp.yaml(5) for the key list")
    assert problems[1].startswith(f"{path}: line 4: config key 'fail_delay'")
    assert "line 6: unknown config key 'password_hash.memory_kb' (did you mean " \
           "'memory_kib'?)" in problems[2]
    assert "line 7:" in problems[3] and "did you mean 'unknown_users'?" in problems[3]
    assert message.startswith(f"{path}: 4 problems:\n")


def test_load_collect_keeps_the_valid_keys(tmp_path):
    """The CLI and doctor read what they can of a broken file (the socket path)."""
    path = tmp_path / "config.yaml"
    path.write_text(BROKEN + "control_socket: /tmp/x/control.sock\n")
    cfg, problems = config.load_collect(path)
    assert cfg.control_socket == "/tmp/x/control.sock" and cfg.issuer == "ACME"
    assert cfg.fail_delay == Config().fail_delay and len(problems) == 4
    assert config.load_collect(tmp_path / "missing.yaml")[0] == Config()


@pytest.mark.parametrize("issuer", ["é" * 100, "认证" * 50, "Ω" * 60])
def test_non_ascii_issuer_that_breaks_every_enrollment_is_refused(issuer):
    """Issue 9 item 11: 100 non-ASCII characters passed --check and then made
    a 37 KB enrollment frame (the shim refuses > 16 KB): every enrollment failed."""
    message = error({"issuer": issuer})
    assert "'issuer'" in message and "16384-byte limit" in message


def test_frame_limit_is_the_wire_limit():
    assert config.PAM_FRAME_LIMIT == protocol.MAX_FRAME


@pytest.mark.parametrize("issuer", ["é" * 30, "ACME Corp. production bastion",
                                    "i" * 100])
def test_an_accepted_issuer_enrolls_in_one_frame(tmp_path, issuer):
    """What validation accepts, the longest name on the longest host really sends."""
    cfg = config.parse({"issuer": issuer, "account_name": "{user}@{host}"})
    assert_enrollment_fits(tmp_path, cfg.issuer, cfg.account_name, "u" * 32 + "$")


def test_config_error_exit_code_is_ex_config():
    assert ConfigError.exit_code == 78


def test_account_name_may_use_email():
    """Issue 11: {email} (from `jctotp user set NAME --email`) is a placeholder too."""
    assert config.parse({"account_name": "{email}"}).account_name == "{email}"
    assert config.parse({"account_name": "{user} {email}"}).account_name


def test_account_name_placeholders_are_bounded():
    assert "'account_name'" in error({"account_name": "{email}{email}{email}"})


# The e-mail address that makes the longest URI: a 64-character local part of
# characters the otpauth:// label percent-encodes (three bytes each).
QUOTED_EMAIL = "{" * 64 + "@" + "d" * 31 + ".org"


@pytest.mark.parametrize("email", ["e" * 64 + "@" + "d" * 31 + ".org", QUOTED_EMAIL])
def test_the_longest_email_label_fits_in_one_frame(tmp_path, email):
    """What validation accepts (issue 12's frame bound computed with the worst
    address, issue 11's label bound) enrolls in one frame with that address."""
    from pam_jctotp.core import policy
    assert policy.check_email(email) == email  # a valid address
    cfg = config.parse({"issuer": "i" * 100, "account_name": "{email} {user}@{host}"})
    assert_enrollment_fits(tmp_path, cfg.issuer, cfg.account_name, email=email)


def test_an_email_label_whose_qr_code_cannot_fit_is_refused():
    """Within the 250-character label bound, two e-mail placeholders with the
    longest issuer still make a QR code no PAM message can carry."""
    message = error({"issuer": "i" * 100, "account_name": "{email}{email}"})
    assert "'issuer'" in message and "16384-byte limit" in message


DIRECTORY_BROKEN = """\
max_atempts: 3
directory:
  type: ldap
  uri: [ldap://ldap.example.com]
  base_dn: ou=Users,dc=example,dc=com
  timout: 5
"""


def test_directory_problems_come_with_the_others_and_their_lines(tmp_path):
    """The `directory:` block goes through the same collector: every problem at
    once, each with its line in config.yaml (before: one ConfigError for the
    whole block, without a line, and nothing else reported)."""
    path, problems, _ = load_error(tmp_path, DIRECTORY_BROKEN)
    assert len(problems) == 3, problems
    assert problems[0].startswith(f"{path}: line 1: unknown config key 'max_atempts'")
    assert problems[1].startswith(f"{path}: line 6: unknown config key 'directory.timout' "
                                  "(did you mean 'directory.timeout'?)")
    assert problems[2].startswith(f"{path}: line 4: config key 'directory.uri'")
    cfg, found = config.load_collect(path)
    assert len(found) == 3 and not cfg.directory.is_ldap  # a broken block: the default


@pytest.mark.parametrize("portal, key", [
    ({"listen": "8443"}, "portal.listen"), ({"public_url": "ftp://x"}, "portal.public_url"),
    ({"tls_cert": "/etc/c.pem"}, "portal.tls_cert"), ({"tls_key": "k.pem"}, "portal.tls_key"),
    ({"session_idle_minutes": 0}, "portal.session_idle_minutes"),
    ({"session_lifetime_minutes": "8h"}, "portal.session_lifetime_minutes"),
    ({"signins_per_minute": 0}, "portal.signins_per_minute"), ({"lisen": "x:1"}, "portal.lisen"),
    ({"user": ""}, "portal.user"),
])
def test_portal_keys_are_checked(portal, key):
    assert repr(key) in error({"portal": portal})


def test_portal_keys_round_trip():
    cfg = config.parse({"portal": {"listen": "[::1]:9443", "public_url": "https://mfa.example.org/",
                                   "tls_cert": "/c.pem", "tls_key": "/k.pem",
                                   "session_idle_minutes": 5}, "password_reset_minutes": 60})
    assert cfg.portal.listen == "[::1]:9443" and cfg.portal.public_url == "https://mfa.example.org"
    assert cfg.portal.session_idle_minutes == 5 and cfg.password_reset_minutes == 60


@pytest.mark.parametrize("smtp, key", [
    ({"port": 0}, "smtp.port"), ({"starttls": "yes"}, "smtp.starttls"),
    ({"from": "nobody"}, "smtp.from"), ({"from": "a@b\nBcc: x@y"}, "smtp.from"),
    ({"username": "u"}, "smtp.password_file"), ({"password_file": "pw"}, "smtp.password_file"),
    ({"hots": "x"}, "smtp.hots"), ({"templates": "mail"}, "smtp.templates"),
])
def test_smtp_keys_are_checked(smtp, key):
    assert repr(key) in error({"smtp": smtp})


def test_smtp_round_trips():
    cfg = config.parse({"smtp": {"host": "mail.example.org", "port": 587, "starttls": True,
                                 "from": "mfa@example.org", "username": "mfa",
                                 "password_file": "/etc/jctotp/smtp.pw"}})
    assert cfg.smtp is not None and cfg.smtp.from_address == "mfa@example.org"
    assert cfg.smtp.port == 587 and cfg.smtp.starttls and cfg.enrollment_reminder_days == 2
    assert config.parse({}).smtp is None


def test_fleet_scale_keys_are_checked():
    assert "'database_pool_min' must not exceed" in error({"database_pool_min": 9,
                                                         "database_pool_max": 8})
    assert "'database_pool_max'" in error({"database_pool_max": 0})
    assert "'fleet_sync_interval'" in error({"fleet_sync_interval": 0.1})
    assert "'directory_sync_interval'" in error({"directory_sync_interval": -1})
    assert "'accounts'" in error({"accounts": "sssd"})
    assert "'metrics_textfile'" in error({"metrics_textfile": "jctotp.prom"})
    assert "'metrics_listen'" in error({"metrics_listen": "0.0.0.0:9877"})


DSN_WITH_PASSWORD = [
    "host=db.example.org user=jctotp password=hunter2 dbname=jctotp",       # libpq key=value
    "host=db.example.org password='hunter2 x' dbname=jctotp",               # quoted
    "postgresql://jctotp:hunter2@db.example.org/jctotp",                     # URI
    "postgres://jctotp@db.example.org/jctotp?sslmode=require&password=hunter2",
    "mysql://jctotp:hunter2@db.example.org/jctotp",                          # not libpq: echoed
]


@pytest.mark.parametrize("dsn", DSN_WITH_PASSWORD)
def test_a_database_password_is_never_echoed(dsn, tmp_path):
    """Issue 20 item 6: a `database:` value in libpq's key=value form was refused
    with the whole string, password included, by `jctotpd --check`, in the
    daemon's log and by doctor. Each still names the key; none shows the password."""
    assert "hunter2" not in error({"database": dsn}) and "'database'" in error({"database": dsn})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"database": dsn, "state_dir": str(tmp_path / "state")}))
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for argv in (["-m", "pam_jctotp.daemon", "--check"], ["-m", "pam_jctotp.daemon"],
                 ["-m", "pam_jctotp.cli", "doctor"]):
        run = subprocess.run([sys.executable, *argv[:2], "--config", str(path), *argv[2:]],
                             capture_output=True, text=True, env=env, timeout=60)
        out = run.stdout + run.stderr
        assert run.returncode != 0 and "'database'" in out, (argv, out)
        assert "hunter2" not in out, (argv, out)


@pytest.mark.parametrize("line, shown", [
    ("could not connect to host=db password=hunter2 port=5432", "password=***"),
    ("host=db password = 'hunter2 x' dbname=j", "password = ***"),
    ("uri postgresql://u:hun@ter2@db/j failed", "postgresql://u:***@db/j"),
    ("postgresql://u@db/j?password=hunter2&sslmode=require", "?password=***&sslmode"),
])
def test_log_lines_redact_connection_string_passwords(line, shown):
    """The log formatter's backstop: an exception text quoting a connection string."""
    record = logging.LogRecord("jctotpd", logging.ERROR, __file__, 1, "%s", (line,), None)
    text = PrintableFormatter("%(message)s").format(record)
    assert "hunter2" not in text and "ter2" not in text and shown in text, text
