"""`jctotp fleet init` and `jctotp fleet import`: one-off admin steps on one host, as root.

Not control verbs: `init` runs before any daemon of the fleet can start (there
is no schema and no key yet), and `import` reads this host's SQLite file. Both
open the database and the key exactly as jctotpd does (daemon.open_store /
open_key), so the key check they write is the one every daemon verifies.
"""

from __future__ import annotations

import argparse
import sys

from .. import config as configmod
from ..daemon import open_fleet, open_key
from ..errors import JctotpError
from ..model import ExitCode


def init(cfg: configmod.Config) -> str:
    """Create the schema and (if absent) the key; store the key check. Idempotent with
    the same key; refuses a database already bound to another key."""
    store = open_fleet(cfg, create=True)
    try:
        open_key(cfg, store, create=True)
        version, where = store.schema_version(), store.where
    finally:
        store.close()
    return (
        f"Fleet database {where} is ready (schema version {version}); this host's key "
        f"file {cfg.key_path} is the fleet's key.\n"
        "On every other host, as root:\n"
        f"  1. copy {cfg.key_path} to its secret_key_file (default "
        "/var/lib/jctotp/secret.key), mode 0600, owner root, e.g.\n"
        f"       scp -p {cfg.key_path} root@HOST:{cfg.key_path}\n"
        "  2. put the same `database:` line in /etc/jctotp/config.yaml, and the libpq "
        "passfile (or client certificate) it uses;\n"
        "  3. systemctl restart jctotpd, then `jctotp doctor`.\n"
        "Keep a copy of the key offline: without it no TOTP secret can be read.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jctotp fleet")
    parser.add_argument("--config", default=configmod.DEFAULT_PATH)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="ACTION")
    sub.add_parser("init", help="create the fleet schema and key (first host)")
    args = parser.parse_args(argv)
    try:
        cfg = configmod.load(args.config, daemon=False)
        print(init(cfg), end="")
    except JctotpError as exc:
        print(f"jctotp fleet: {exc}", file=sys.stderr)
        return exc.exit_code
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
