"""The fleet's admin side (issue 13): the audit trail of every host, doctor, and moving
a host's SQLite users into the fleet database (`jctotp fleet import`)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pamdriver as pd
import pyotp
import pytest
import yaml
from fleetlib import service
from servers.slapd import MFA, slapd, slapd_server  # noqa: F401
from testlib import Daemon, code_at, daemon_config, ldap_directory

pytestmark = pytest.mark.fleet

PASSWORD = "correct horse battery"


def test_audit_shows_the_fleets_events_with_host_names(make_host, confdir):
    a, b = make_host("a"), make_host("b")
    totp = a.add_user("alice")
    assert pd.run(confdir, service(confdir, a), "alice", [PASSWORD, code_at(totp)]).rc == 0
    b.set_clock(30)
    assert pd.run(confdir, service(confdir, b), "alice", [PASSWORD, code_at(totp, 30)]).rc == 0
    a.ok("audit", user="alice")   # reading flushes A's queue of database copies
    events = b.ok("audit", user="alice")
    logins = [(e["host"], e["event"]) for e in events if e["event"] == "login_ok"]
    assert logins == [("host-a", "login_ok"), ("host-b", "login_ok")]
    assert {e["host"] for e in b.ok("audit", host="host-a")} == {"host-a"}
    out = b.cli("audit", "--host", "host-b")
    assert out.returncode == 0 and "host-b" in out.stdout and "host-a" not in out.stdout
    # the host's own file still has its own events
    assert {e["host"] for e in a.audit_events()} == {"host-a"}


def test_doctor_reports_the_database_schema_and_key_check(make_host):
    a = make_host("a")
    out = a.cli("doctor", "--json")
    found = {f["what"]: f["level"] for f in json.loads(out.stdout)}
    assert any(w.startswith("fleet database postgresql://jctotp@") and lvl == "ok"
               for w, lvl in found.items()), found
    versions = [w for w in found if w.startswith("fleet schema version")]
    assert len(versions) == 1 and found[versions[0]] == "ok", found
    assert re.fullmatch(r"fleet schema version (\d+) \(this jctotpd: \1\)", versions[0])
    assert found.get("key check: this host's key file is the fleet's key") == "ok", found


def test_fleet_init_refuses_a_database_bound_to_another_key(make_host, tmp_path):
    a = make_host("a", start=False)
    Path(a.config["secret_key_file"]).write_bytes(os.urandom(32))
    out = a.cli("fleet", "init")
    assert out.returncode != 0 and "key check mismatch" in out.stderr


def sqlite_host(tmp_path_factory) -> Daemon:
    tmp = tmp_path_factory.mktemp("island")
    os.chmod(tmp, 0o755)
    return Daemon(tmp, daemon_config(tmp, max_attempts=2, unlock_after=0)).start()


def test_fleet_import_moves_users_secrets_and_locks(make_host, confdir, tmp_path_factory):
    island = sqlite_host(tmp_path_factory)
    alice = island.add_user("alice")
    island.add_user("bob")
    svc = service(confdir, island)
    for _ in range(2):
        pd.run(confdir, svc, "bob", ["wrong password", "000000"])
    assert island.user("bob")["locked"]
    island.ok("user.add", name="carol", password=PASSWORD, mfa=False, admin=False,
              system_account=False)
    island.stop()

    fleet = make_host("a")
    fleet.add_user("carol", mfa=False)          # a name clash
    # the island's config now names the fleet (its own SQLite and key stay where they are)
    island.config.update(database=fleet.config["database"],
                         secret_key_file=fleet.config["secret_key_file"])
    island.config_path.write_text(yaml.safe_dump(island.config))
    refused = island.cli("fleet", "import")
    assert refused.returncode != 0 and "carol" in refused.stderr and "nothing" in refused.stderr
    assert fleet.request("user.show", name="alice").exit == 3
    done = island.cli("fleet", "import", "--on-clash", "skip")
    assert done.returncode == 0, done.stderr
    assert "imported 2 user(s)" in done.stdout and "skipped (already in the fleet): carol" \
        in done.stdout
    assert "recovery codes not moved" in done.stdout  # the island had its own key
    fleet_svc = service(confdir, fleet)
    assert pd.run(confdir, fleet_svc, "alice", [PASSWORD, code_at(alice)]).rc == pd.PAM_SUCCESS
    assert fleet.user("bob")["locked"]
    assert pd.run(confdir, fleet_svc, "bob", [PASSWORD, "000000"]).rc == pd.PAM_MAXTRIES


def test_fleet_import_names_a_host_key_replaced_by_the_fleets(make_host, confdir,
                                                              tmp_path_factory):
    """README step 3 on a host with users of its own: the fleet's key copied over the
    host's key file. The import then says so and imports nobody; with the host's old
    key (--key) it moves them."""
    island = sqlite_host(tmp_path_factory)
    island.add_user("aaron", mfa=False)          # no secret: would move with any key
    bob = island.add_user("bob")
    island.stop()
    fleet = make_host("a")
    own_key = Path(island.config["state_dir"]) / "secret.key"
    kept = own_key.with_name("secret.key.host")
    kept.write_bytes(own_key.read_bytes())        # what the README says to do first
    kept.chmod(0o600)
    own_key.write_bytes(Path(fleet.config["secret_key_file"]).read_bytes())   # scp -p
    island.config.update(database=fleet.config["database"])
    island.config_path.write_text(yaml.safe_dump(island.config))

    refused = island.cli("fleet", "import")
    assert refused.returncode != 0
    assert "already the fleet's key" in refused.stderr and "--key" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert fleet.request("user.show", name="aaron").exit == 3   # nobody, not half
    done = island.cli("fleet", "import", "--key", str(kept))
    assert done.returncode == 0, done.stderr
    assert "imported 2 user(s)" in done.stdout
    assert pd.run(confdir, service(confdir, fleet), "bob",
                  [PASSWORD, code_at(bob)]).rc == pd.PAM_SUCCESS


def test_fleet_import_on_clash_refuse_skip_replace(make_host, confdir, tmp_path_factory):
    """A name on both (alice): refused by default (nothing moves), kept by `skip`, and
    by `replace` the imported record wins: the island's key logs in, the fleet's old
    key and its recovery codes are refused."""
    island = sqlite_host(tmp_path_factory)
    mine = island.add_user("alice")
    island.add_user("dave", mfa=False)
    island.stop()
    fleet = make_host("a", max_attempts=100)
    added = fleet.ok("user.add", name="alice", password="the fleet's password", mfa=True,
                     admin=False, system_account=False)
    theirs = pyotp.parse_uri(added["otpauth_uri"])
    island.config.update(database=fleet.config["database"],
                         secret_key_file=fleet.config["secret_key_file"])
    island.config_path.write_text(yaml.safe_dump(island.config))
    svc = service(confdir, fleet)

    def login(password: str, totp, offset: float) -> int:
        fleet.set_clock(offset)
        return pd.run(confdir, svc, "alice", [password, code_at(totp, offset)]).rc

    refused = island.cli("fleet", "import")
    assert refused.returncode != 0 and "alice" in refused.stderr, refused.stderr
    assert fleet.request("user.show", name="dave").exit == 3          # nothing moved
    assert login("the fleet's password", theirs, 0) == pd.PAM_SUCCESS
    skipped = island.cli("fleet", "import", "--on-clash", "skip")
    assert skipped.returncode == 0, skipped.stderr
    assert "imported 1 user(s)" in skipped.stdout and ": dave" in skipped.stdout
    assert "skipped (already in the fleet): alice" in skipped.stdout
    assert login("the fleet's password", theirs, 30) == pd.PAM_SUCCESS
    replaced = island.cli("fleet", "import", "--on-clash", "replace")
    assert replaced.returncode == 0, replaced.stderr
    assert "imported 2 user(s)" in replaced.stdout, replaced.stdout
    assert "replaced (the fleet's record dropped): alice, dave" in replaced.stdout
    assert login("the fleet's password", theirs, 60) == pd.PAM_AUTH_ERR
    assert login(PASSWORD, theirs, 90) == pd.PAM_AUTH_ERR              # the old key
    assert login(PASSWORD, mine, 120) == pd.PAM_SUCCESS                # the imported one
    fleet.set_clock(150)
    assert pd.run(confdir, svc, "alice", [PASSWORD, added["recovery_codes"][0]]
                  ).rc == pd.PAM_AUTH_ERR
    assert fleet.user("alice")["failed_attempts"] >= 1


def test_fleet_init_says_what_to_do_on_this_host_and_the_others(make_host):
    a = make_host("a", start=False)
    out = a.cli("fleet", "init")
    assert out.returncode == 0, out.stderr
    assert "On this host" in out.stdout and "jctotp fleet import" in out.stdout
    assert "secret.key.host" in out.stdout    # a host's own key is kept for its import


def test_fleet_import_names_only_moved_users_as_without_recovery_codes(make_host,
                                                                       tmp_path_factory):
    island = sqlite_host(tmp_path_factory)
    island.add_user("alice")
    island.add_user("bob")
    island.stop()
    fleet = make_host("a")
    fleet.add_user("alice")                       # the fleet's alice keeps her codes
    island.config.update(database=fleet.config["database"],
                         secret_key_file=fleet.config["secret_key_file"])
    island.config_path.write_text(yaml.safe_dump(island.config))
    done = island.cli("fleet", "import", "--on-clash", "skip")
    assert done.returncode == 0, done.stderr
    lost = next(ln for ln in done.stdout.splitlines() if "recovery codes not moved" in ln)
    assert lost.endswith(": bob"), done.stdout


def test_doctor_says_to_restart_a_daemon_still_on_sqlite(make_host, tmp_path_factory):
    """config.yaml names the fleet, jctotpd was not restarted (README Fleet step 2)."""
    fleet = make_host("a")
    island = sqlite_host(tmp_path_factory)
    island.config.update(database=fleet.config["database"],
                         secret_key_file=fleet.config["secret_key_file"])
    island.config_path.write_text(yaml.safe_dump(island.config))
    try:
        out = island.cli("doctor", "--json")
    finally:
        island.stop()
    found = {f["what"]: f["level"] for f in json.loads(out.stdout)}
    assert any("restart jctotpd" in w and lvl == "warn" for w, lvl in found.items()), found
    # the start line says it too, for whoever reads the journal instead
    assert "ready (state: SQLite " in island.log.read_text()
    assert "ready (state: fleet database postgresql://jctotp@" in fleet.log.read_text()
    assert "as host host-a)" in fleet.log.read_text()


def test_doctor_names_a_totp_rule_the_database_does_not_check_with(make_host, pg_uri):
    """Issue 22: the database checks codes with its own rule (pg_codecheck.py); a host
    whose config differs is told, and `fleet init --admin-database` sets the rule."""
    a = make_host("a")
    assert a.cli("doctor", "--json").stdout.count("TOTP rule: the config's is the database's")
    b = make_host("b", totp_window=2)

    def rule_finding(host) -> dict:
        return next(f for f in json.loads(host.cli("doctor", "--json").stdout)
                    if f["what"].startswith("TOTP rule"))

    said = rule_finding(b)
    assert said["level"] == "fail" and "totp_window 1" in said["what"], said
    done = b.cli("fleet", "init", "--admin-database", pg_uri)
    assert done.returncode == 0, done.stderr
    assert rule_finding(b)["level"] == "ok"
    assert rule_finding(a)["level"] == "fail"


@pytest.mark.ldap
def test_an_imported_record_of_an_mfa_groups_member_must_enroll(  # noqa: F811
        make_host, confdir, slapd, tmp_path_factory):  # noqa: F811
    """Issue 21: group policy holds for a record `jctotp fleet import` made (MFA off on
    the island): the member of mfa_groups gets the default period at their first login
    on the fleet, never a password-only login."""
    name = f"imp{os.getpid() % 100000}"
    password = slapd.add_user(name, groups=(MFA,))
    island = sqlite_host(tmp_path_factory)
    island.add_user(name, mfa=False)
    island.stop()
    fleet = make_host("a", directory=ldap_directory(slapd), mfa_groups=[MFA],
                      default_enrollment_days=4, directory_sync_interval=0)
    island.config.update(database=fleet.config["database"],
                         secret_key_file=fleet.config["secret_key_file"])
    island.config_path.write_text(yaml.safe_dump(island.config))
    done = island.cli("fleet", "import")
    assert done.returncode == 0, done.stderr
    assert fleet.user(name)["mfa"] == "off"        # as it was on the island
    r = pd.run(confdir, service(confdir, fleet), name, [password, ""], call="both")
    text = "\n".join(m.text for m in r.transcript)
    assert "4 day(s) left" in text, text           # asked to enroll: the default period
    assert fleet.user(name)["mfa"] == "pending"
    assert not [e for e in fleet.audit_events()
                if e["event"] == "login_ok" and e.get("how") == "password_only"]
