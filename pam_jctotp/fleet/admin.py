"""`jctotp fleet init`, `import` and `host` (hosts.py): one-off admin steps, as root.

Not control verbs: `init` runs before any daemon of the fleet can start (there
is no schema and no key yet), and `import` reads this host's SQLite file. Both
open the database and the key exactly as jctotpd does (daemon.open_store /
open_key), so the key check they write is the one every daemon verifies.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from .. import config as configmod
from ..core.accounts import TOTP_PURPOSE
from ..core.totp import Totp, decode_key
from ..crypto import SecretBox, key_check
from ..daemon import open_fleet, open_key, unsealer
from ..directory.nss import NssAccounts
from ..errors import JctotpError, StoreError, UsageError
from ..model import ExitCode, UserRecord
from ..store import USER_COLUMNS, pg_codecheck, pg_hosts
from . import hosts, rotate
from .statements import Statements


def init(cfg: configmod.Config, admin: bool = False) -> str:
    """Create the schema and (if absent) the key; store the key check. Idempotent with
    the same key; refuses a database already bound to another key. `admin` (connected
    with --admin-database): the host roles' grants are renewed too (after an upgrade)."""
    store = open_fleet(cfg, create=True)
    try:
        key = open_key(cfg, store, create=True)
        store.unseal_legacy(unsealer(key))   # keys sealed before the database kept them
        if admin:
            store.administer(pg_hosts.renew_grants)
            store.administer(partial(pg_codecheck.set_rule, totp=Totp(
                cfg.totp_digits, cfg.totp_period, cfg.totp_window)))
        version, where = store.schema_version(), store.where
    finally:
        store.close()
    return (
        f"Fleet database {where} is ready (schema version {version}); this host's key "
        f"file {cfg.key_path} is the fleet's key.\n"
        "On this host, as root: `jctotp fleet import` if it has users in SQLite "
        "(before the restart: until then they log in as before), then "
        "systemctl restart jctotpd and `jctotp doctor`.\n"
        "On every other host, as root:\n"
        "  1. if it has users of its own, keep its key for the import: "
        "mv /var/lib/jctotp/secret.key /var/lib/jctotp/secret.key.host\n"
        f"  2. copy {cfg.key_path} to its secret_key_file (default "
        "/var/lib/jctotp/secret.key), mode 0600, owner root, e.g.\n"
        f"       scp -p {cfg.key_path} root@HOST:{cfg.key_path}\n"
        "  3. put the same `database:` line in /etc/jctotp/config.yaml, and the libpq "
        "passfile (or client certificate) it uses; or, better, a role of its own: "
        "`jctotp fleet host add HOST --admin-database URI --out DIR` here, then its "
        "pgpass and config.yaml lines there;\n"
        "  4. with users of its own: jctotp fleet import --key "
        "/var/lib/jctotp/secret.key.host\n"
        "  5. systemctl restart jctotpd, then `jctotp doctor`.\n"
        "Keep a copy of the key offline: without it no TOTP secret can be read.\n")


def _host_rows(path: Path) -> tuple[list[UserRecord], dict[str, list[tuple[str, float | None]]]]:
    """This host's SQLite users and recovery codes, read-only (jctotpd may be running)."""
    if not path.exists():
        raise UsageError(f"no SQLite state database at {path} (use --from PATH)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            users = [UserRecord(*r) for r in db.execute(
                f"SELECT {', '.join(USER_COLUMNS)} FROM users ORDER BY name")]
            codes: dict[str, list[tuple[str, float | None]]] = {}
            for user, code_hash, used_at in db.execute(
                    "SELECT user, code_hash, used_at FROM recovery_codes"):
                codes.setdefault(user, []).append((code_hash, used_at))
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    return users, codes


def _reseal(blob: bytes | None, name: str, purpose: str, old: SecretBox,
            new: SecretBox) -> bytes | None:
    return None if blob is None else new.seal(old.open(blob, name, purpose), name, purpose)


def _import_user(db: Statements, rec: UserRecord, codes: Iterable[tuple[str, float | None]],
                 overwrite: bool) -> bool:
    """Insert a whole row with its recovery codes, in one transaction; False when the
    name exists and `overwrite` (--on-clash replace) is not set."""
    values = {k: (int(v) if isinstance(v, bool) else v) for k, v in rec.__dict__.items()}
    columns = ", ".join(USER_COLUMNS)
    placeholders = ", ".join(f"%({k})s" for k in USER_COLUMNS)
    with db.unit_of_work():
        if overwrite:
            db.run(lambda c: c.execute("DELETE FROM users WHERE name = %s", (rec.name,)).rowcount)
        if not db.run(lambda c: c.execute(f"INSERT INTO users ({columns}) VALUES ({placeholders}) "
                                          "ON CONFLICT (name) DO NOTHING", values).rowcount):
            return False
        rows = [(rec.name, h, used) for h, used in codes]
        if rows:
            db.run(lambda c: c.cursor().executemany(
                'INSERT INTO recovery_codes ("user", code_hash, used_at) '
                "VALUES (%s, %s, %s)", rows), long=True)
    return True


def import_host(cfg: configmod.Config, source: Path, old_key: Path, on_clash: str) -> str:
    """Move this host's SQLite users (secrets, recovery codes, counters, locks) into the
    fleet database. Secrets are re-sealed with the fleet key; recovery codes move only
    when both keys are the same (their hashes are keyed), otherwise they are dropped
    and named. A name already in the fleet: refuse (nothing changes), skip or replace."""
    users, codes = _host_rows(source)
    if not old_key.exists():
        raise UsageError(f"this host's key file {old_key} does not exist (use --key PATH)")
    store = open_fleet(cfg)
    try:
        open_key(cfg, store)   # this host has the fleet's key (recovery-code hashes)
        old_bytes = open_key(replace(cfg, database=None, secret_key_file=str(old_key)), store)
        old = SecretBox(old_bytes)
        same_key = key_check(old_bytes) == store.expected_key_check
        clashes = [u.name for u in users if store.get(u.name) is not None]
        if clashes and on_clash == "refuse":
            raise UsageError(f"already in the fleet database: {', '.join(clashes)}; nothing "
                             "was imported (--on-clash skip|replace)")
        # Every secret is opened before anything is written: a key that does not
        # open them imports nobody. The database keeps the keys (pg_codecheck.py):
        # the rows get them through jctotp_put_key; unconfirmed keys are not moved.
        try:
            keys = {rec.name: decode_key(old.open(rec.totp_secret, rec.name, TOTP_PURPOSE))
                    for rec in users if rec.totp_secret is not None}
            moving = [replace(rec, totp_secret=None, pending_secret=None) for rec in users]
        except StoreError as exc:
            if not same_key:
                raise
            raise UsageError(
                f"{old_key} is already the fleet's key, and {source}'s secrets were sealed "
                "with another one (this host's own key file was replaced by the fleet's?): "
                "give that key with --key PATH; nothing was imported") from exc
        done, skipped, lost_codes = [], [], []
        for moved in moving:
            user_codes = codes.get(moved.name, []) if same_key else []
            if _import_user(store, moved, user_codes, on_clash == "replace"):
                if moved.name in keys:
                    store.put_key(moved.name, keys[moved.name])
                done.append(moved.name)
                if not same_key and codes.get(moved.name):
                    lost_codes.append(moved.name)   # (a skipped user keeps the fleet's)
            else:
                skipped.append(moved.name)
    finally:
        store.close()
    lines = [f"imported {len(done)} user(s) from {source}: {', '.join(done) or '-'}"]
    if skipped:
        lines.append(f"skipped (already in the fleet): {', '.join(skipped)}")
    replaced = [n for n in done if n in clashes] if on_clash == "replace" else []
    if replaced:   # their keys, recovery codes and counters in the fleet are gone
        lines.append(f"replaced (the fleet's record dropped): {', '.join(replaced)}")
    if lost_codes:
        lines.append("recovery codes not moved (made with another key; run `jctotp "
                     f"recovery-codes` as the user): {', '.join(lost_codes)}")
    return "\n".join(lines) + "\n"


def break_glass(cfg: configmod.Config, names: list[str], admin_uri: str) -> str:
    """`jctotp fleet break-glass`: the users whose TOTP keys the hosts may copy for a
    database outage (store/pg_codecheck.py); no names: the fleet's users that
    break_glass_group has here (NSS), as each host's copy picks them."""
    store = open_fleet(hosts.admin_config(cfg, admin_uri))
    try:
        if not names:
            if not cfg.break_glass_group:
                raise UsageError("name the users, or set break_glass_group in the config")
            nss = NssAccounts()
            names = [r.name for r in store.list()
                     if cfg.break_glass_group in nss.groups_of(r.name)]
        unknown = [n for n in names if store.get(n) is None]
        if unknown:
            raise UsageError(f"not in the fleet database: {', '.join(unknown)}; nothing "
                             "was changed")
        store.administer(partial(pg_codecheck.set_break_glass, names=sorted(set(names))))
    finally:
        store.close()
    return (f"Break-glass keys: {', '.join(sorted(set(names))) or 'nobody'}; only these "
            "users' TOTP keys reach the hosts' copies (each host's copy follows within seconds).\n")


def hosts_parser(sub: Any) -> None:
    host = sub.add_parser("host", help="a database role per host: add, list, rotate, remove")
    verbs = host.add_subparsers(dest="host_verb", required=True, metavar="ACTION")
    for verb, text in (("add", "make a host's role; write its pgpass and config"),
                       ("rotate", "a new database password for one host")):
        made = verbs.add_parser(verb, help=text)
        made.add_argument("name", metavar="NAME")
        made.add_argument("--admin-database", metavar="URI", required=True)
        made.add_argument("--out", metavar="DIR", required=True, help="where to write "
                          "pgpass and config.yaml for the host")
        made.add_argument("--passfile", default=hosts.DEFAULT_PASSFILE, metavar="PATH",
                          help="where the host keeps its pgpass (default %(default)s)")
        made.add_argument("--client-cert", action="store_true", help="also a client "
                          "certificate signed by the fleet CA (state_dir/fleet-ca.*)")
    lst = verbs.add_parser("list", help="each host, and when it was last seen")
    lst.add_argument("--admin-database", metavar="URI")
    rm = verbs.add_parser("remove", help="revoke a host at once (its sessions end)")
    rm.add_argument("name", metavar="NAME")
    rm.add_argument("--admin-database", metavar="URI", required=True)


def host_verb(cfg: configmod.Config, args: argparse.Namespace) -> str:
    if args.host_verb == "add":
        return hosts.add(cfg, args.name, args.admin_database, Path(args.out), args.passfile,
                         args.client_cert)
    if args.host_verb == "rotate":
        return hosts.rotate(cfg, args.name, args.admin_database, Path(args.out), args.passfile,
                            args.client_cert)
    if args.host_verb == "remove":
        return hosts.remove(cfg, args.name, args.admin_database)
    return hosts.listing(cfg, args.admin_database)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jctotp fleet")
    parser.add_argument("--config", default=configmod.DEFAULT_PATH)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="ACTION")
    ini = sub.add_parser("init", help="create the fleet schema and key (first host)")
    ini.add_argument("--admin-database", metavar="URI", help="connect as the schema's "
                     "owner (CREATEROLE; password from libpq's passfile), not `database:`")
    hosts_parser(sub)
    rot = sub.add_parser("rotate-key", help="re-seal every secret under a new fleet key")
    rot.add_argument("--admin-database", metavar="URI", help="connect as the schema's "
                     "owner (password from libpq's passfile), not `database:`")
    rot.add_argument("--finish", action="store_true", help="every host has the new key: "
                     "drop the old one")
    brk = sub.add_parser("break-glass", help="whose TOTP keys the hosts may copy for an "
                         "outage (replaces the list)")
    brk.add_argument("names", nargs="*", metavar="NAME", help="default: the fleet's users "
                     "in break_glass_group (NSS on this host)")
    brk.add_argument("--admin-database", metavar="URI", required=True)
    imp = sub.add_parser("import", help="move this host's SQLite users into the fleet")
    imp.add_argument("--from", dest="source", help="SQLite file (default state_dir/jctotp.db)")
    imp.add_argument("--key", help="its key file (default state_dir/secret.key)")
    imp.add_argument("--on-clash", choices=("refuse", "skip", "replace"), default="refuse",
                     help="a name already in the fleet: refuse (default), skip, replace")
    args = parser.parse_args(argv)
    try:
        cfg = configmod.load(args.config, daemon=False)
        if args.verb == "init":
            if args.admin_database:
                cfg = hosts.admin_config(cfg, args.admin_database)
            print(init(cfg, admin=bool(args.admin_database)), end="")
        elif args.verb == "host":
            print(host_verb(cfg, args), end="")
        elif args.verb == "rotate-key":
            if args.admin_database:
                cfg = hosts.admin_config(cfg, args.admin_database)
            print(rotate.rotate_key(cfg, args.finish), end="")
        elif args.verb == "break-glass":
            print(break_glass(cfg, args.names, args.admin_database), end="")
        else:
            local = Path(cfg.state_dir)
            print(import_host(cfg, Path(args.source or local / "jctotp.db"),
                              Path(args.key or local / "secret.key"), args.on_clash), end="")
    except JctotpError as exc:
        print(f"jctotp fleet: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\njctotp fleet: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:  # the promise: a message, never a traceback
        if os.environ.get("JCTOTP_DEBUG"):
            raise
        print(f"jctotp fleet: internal error ({type(exc).__name__}: {exc}); run with "
              "JCTOTP_DEBUG=1 for details and report it", file=sys.stderr)
        return ExitCode.REFUSED
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
