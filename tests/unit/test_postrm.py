"""packaging/deb/postrm (issue 22): `purge` leaves no credential file the package
or its config put on the host. Run on a fake root through dpkg's DPKG_ROOT, in the
order dpkg runs a purge: postrm remove, conffiles deleted, postrm purge."""

from __future__ import annotations

import subprocess
from pathlib import Path

POSTRM = Path(__file__).resolve().parents[2] / "packaging" / "deb" / "postrm"

CONFIG = """\
database: "postgresql://jctotp_ab12cd34_web1@db.example.org:5432/jctotp?sslmode=verify-full&passfile=/etc/jctotp/web1.pgpass"
secret_key_file: /srv/keys/secret.key   # the fleet's key
directory:
  ldap:
    bind_password_file: '/etc/jctotp/ldap-bind.pw'
smtp:
  password_file: /etc/jctotp/smtp.pw
portal:
  tls_key: /etc/ssl/private/portal.key
"""

CREDENTIALS = ["etc/jctotp/web1.pgpass", "srv/keys/secret.key", "etc/jctotp/ldap-bind.pw",
               "etc/jctotp/smtp.pw", "etc/ssl/private/portal.key", "etc/jctotp/pgpass",
               "var/lib/jctotp/secret.key", "var/lib/jctotp/break-glass.db"]


def postrm(root: Path, action: str) -> None:
    # Never run a postrm that could touch this machine: every rm and rmdir must be
    # under $root (DPKG_ROOT), checked before the script runs.
    for line in POSTRM.read_text().splitlines():
        if any(w in line.split() for w in ("rm", "rmdir")):
            assert '"$root' in line, f"postrm deletes outside DPKG_ROOT: {line.strip()}"
    subprocess.run(["sh", str(POSTRM), action], env={"DPKG_ROOT": str(root), "PATH":
                   "/usr/bin:/bin"}, check=True, timeout=10)


def test_purge_removes_every_credential_file_the_config_named(tmp_path):
    for name in CREDENTIALS + ["etc/ssl/private/other.key", "srv/keys/README"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "etc/jctotp/config.yaml").write_text(CONFIG)
    (tmp_path / "root").mkdir()
    (tmp_path / "root/.pgpass").write_text(   # libpq's default: the role's line goes too
        "db.example.org:5432:jctotp:jctotp_ab12cd34_web1:pw\nother:5432:bi:reporting:keep\n")
    postrm(tmp_path, "remove")
    assert all((tmp_path / name).exists() for name in CREDENTIALS)   # remove keeps them
    (tmp_path / "etc/jctotp/config.yaml").unlink()   # dpkg: conffiles go before purge
    postrm(tmp_path, "purge")
    assert [n for n in CREDENTIALS if (tmp_path / n).exists()] == []
    assert not (tmp_path / "etc/jctotp").exists() and not (tmp_path / "var/lib/jctotp").exists()
    # nothing the config did not name
    assert (tmp_path / "root/.pgpass").read_text() == "other:5432:bi:reporting:keep\n"
    assert (tmp_path / "etc/ssl/private/other.key").exists()
    assert (tmp_path / "srv/keys/README").exists()


def test_purge_without_an_earlier_remove_still_removes_the_documented_places(tmp_path):
    for name in ("etc/jctotp/pgpass", "etc/jctotp/ldap.pw", "var/lib/jctotp/secret.key"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    postrm(tmp_path, "purge")
    assert not (tmp_path / "etc/jctotp").exists() and not (tmp_path / "var/lib").joinpath(
        "jctotp").exists()


def test_purge_removes_root_pgpass_lines_of_the_role_and_a_custom_state_dir(tmp_path):
    """`database:` without passfile= (libpq reads root's ~/.pgpass): only that role's
    lines go; a state_dir of its own loses the key, the break-glass copy and the
    audit spool, and nothing else in it."""
    state = ["srv/jc/secret.key", "srv/jc/break-glass.db", "srv/jc/break-glass.db-wal",
             "srv/jc/break-glass.matched", "srv/jc/audit-spool", "srv/jc/secret.key.new",
             "srv/jc/fleet-ca.key"]
    for name in state + ["srv/jc/other", "var/lib/jctotp/audit-spool"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    pgpass = tmp_path / "root/.pgpass"
    pgpass.parent.mkdir()
    pgpass.write_text("db.example.org:5432:jctotp:jctotp_ab12cd34_web1:s3cret\n"
                      "db.example.org:5432:other:reporting:keepme\n")
    (tmp_path / "etc/jctotp").mkdir(parents=True)
    (tmp_path / "etc/jctotp/config.yaml").write_text(
        "database: postgresql://jctotp_ab12cd34_web1@db.example.org/jctotp?sslmode=require\n"
        "state_dir: /srv/jc\n")
    postrm(tmp_path, "remove")
    (tmp_path / "etc/jctotp/config.yaml").unlink()
    postrm(tmp_path, "purge")
    assert [n for n in state if (tmp_path / n).exists()] == []
    assert (tmp_path / "srv/jc/other").exists()
    assert pgpass.read_text() == "db.example.org:5432:other:reporting:keepme\n"
    assert not (tmp_path / "var/lib/jctotp").exists()
    pgpass.write_text("db.example.org:5432:jctotp:jctotp_ab12cd34_web1:s3cret\n")
    (tmp_path / "etc/jctotp").mkdir(parents=True)
    (tmp_path / "var/lib/jctotp").mkdir(parents=True)   # installed again
    (tmp_path / "etc/jctotp/config.yaml").write_text(
        "database: 'postgresql://jctotp_ab12cd34_web1@db.example.org/jctotp'\n")
    postrm(tmp_path, "remove")
    postrm(tmp_path, "purge")
    assert not pgpass.exists()                  # only the role's line: the file goes
