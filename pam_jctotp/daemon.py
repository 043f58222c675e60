"""jctotpd: the verifier daemon (foreground; systemd Type=notify).

The one place that opens the store and the key and wires the layers together:
store + directory + accounts (core) + driver and servers (transport).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import os
import resource
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, cast

from . import __version__, config as configmod
from .audit import AuditLog
from .clock import Clock
from .core.accounts import Accounts
from .crypto import SecretBox, key_check, load_or_create_key, read_key
from .directory import Directory
from .directory.local import LocalDirectory, Passwords
from .directory.nss import NssAccounts
from .errors import ConfigError, JctotpError, StoreError
from .fleet import breakglass
from .fleet.accounts import SystemAccountSync
from .fleet.audit import FleetAudit
from .fleet.sync import FleetSync
from .model import UserRecord
from .printable import PrintableFormatter
from .store import Store
from .store.markers import LockMarkers
from .store.sqlite import SqliteStore
from .transport.driver import Driver
from .transport.server import Daemon

if TYPE_CHECKING:
    from .store.postgres import PostgresStore

PAM_STEP_WORKERS = 16      # PAM conversation steps (store, NSS, audit) in flight at once
CONTROL_STEP_WORKERS = 4   # control requests: their own pool, so useradd never queues a login

log = logging.getLogger("jctotpd")


def _notify(state: str) -> None:
    """sd_notify without a hard dependency: python3-sdnotify if present."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    try:
        import sdnotify  # type: ignore[import-not-found]
    except ImportError:
        log.warning("NOTIFY_SOCKET is set but python3-sdnotify is not installed")
        return
    sdnotify.SystemdNotifier().notify(state)


def make_directory(cfg: configmod.Config, store: Store, system: NssAccounts) -> Directory:
    if cfg.directory.is_ldap:
        from .directory.ldap import LdapDirectory  # ldap3 only where it is used
        return LdapDirectory(cfg.directory, system,
                             cfg.admin_groups + cfg.exempt_groups + cfg.mfa_groups)
    return LocalDirectory(store, Passwords(cfg.password_hash), system)


def open_store(cfg: configmod.Config, create: bool = False) -> Store:
    """SQLite in state_dir, or the fleet's PostgreSQL when `database:` names one.
    `create` (jctotp fleet init only) makes the fleet schema in an empty database."""
    os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    if not cfg.database:
        return SqliteStore(cfg.db_path)
    try:
        from .store.postgres import PostgresStore
    except ImportError:
        raise StoreError("config key 'database' needs psycopg 3 and psycopg_pool "
                         "(apt install python3-psycopg python3-psycopg-pool)") from None
    return PostgresStore(cfg.database, create=create)


def open_fleet(cfg: configmod.Config, create: bool = False) -> "PostgresStore":
    """The fleet database itself (for `jctotp fleet ...`): open_store with `database:`."""
    if not cfg.database:
        raise ConfigError("`jctotp fleet` needs `database:` (a libpq URI) in the config")
    return cast("PostgresStore", open_store(cfg, create))


def open_key(cfg: configmod.Config, store: Store, create: bool = False) -> bytes:
    """The key that encrypts TOTP secrets. On a fleet every host has the same file,
    and the database's key check proves it before a single login is answered."""
    if not cfg.database:
        return load_or_create_key(cfg.key_path)
    fleet = cast("PostgresStore", store)
    key = load_or_create_key(cfg.key_path) if create else read_key(cfg.key_path)
    stored = fleet.meta("key_check")
    if stored is None and create:
        stored = fleet.claim_meta("key_check", key_check(key))
    if stored is None:
        raise StoreError(f"the fleet database {fleet.where} has no key check: "
                         "run `jctotp fleet init` on the first host")
    fleet.expected_key_check = key_check(key)
    if not hmac.compare_digest(stored, fleet.expected_key_check):
        raise StoreError(f"key file {cfg.key_path} is not the key of the fleet database "
                         f"{fleet.where} (key check mismatch): copy secret_key_file from "
                         "a host of the fleet; refusing to start")
    return key


def build(cfg: configmod.Config) -> tuple[Accounts, AuditLog | FleetAudit, FleetSync | None]:
    store = open_store(cfg)
    try:
        box = SecretBox(open_key(cfg, store))
    except JctotpError:
        store.close()
        raise
    system = NssAccounts()
    local = AuditLog(cfg.audit_log, cfg.audit_syslog, cfg.host_name)
    source = store   # the markers follow the database itself (never a break-glass copy)
    markers = LockMarkers(os.path.join(cfg.state_dir, "locked"),
                          lambda: [r.name for r in source.list() if r.locked_at is not None])
    markers.resync()
    sync = None
    audit: AuditLog | FleetAudit = local
    if cfg.database:
        fleet = cast("PostgresStore", store)
        store, sync = fleet_copies(cfg, fleet, system, markers)
        audit = FleetAudit(local, fleet)
    directory = make_directory(cfg, store, system)
    return Accounts(cfg, store, directory, system, box, Clock(controllable=cfg.clock_control),
                    audit, markers), audit, sync


def fleet_copies(cfg: configmod.Config, fleet: "PostgresStore", system: NssAccounts,
                 markers: LockMarkers) -> tuple[Store, FleetSync]:
    """The host-local copies a fleet host keeps current (fleet/sync.py), and the store
    the daemon uses: the fleet's, with the break-glass fallback when configured."""
    steps: list[Callable[[list[UserRecord]], Any]] = [
        lambda rows: markers.sync(r.name for r in rows if r.locked_at is not None)]
    if cfg.create_system_accounts:
        steps.append(SystemAccountSync(system, Path(cfg.state_dir) / "system-accounts"))
    store: Store = fleet
    if cfg.break_glass_group:
        group = cfg.break_glass_group
        copy = SqliteStore(Path(cfg.state_dir) / "break-glass.db")
        steps.append(lambda rows: breakglass.refresh(
            copy, rows, lambda name: group in system.groups_of(name)))
        store = cast(Store, breakglass.BreakGlassStore(fleet, copy))
    return store, FleetSync(fleet, fleet.listener(), steps)


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (systemd's default soft limit is
    1024); the control socket's tables are sized from what we get (transport/limits.py)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, hard, exc)
    return soft


async def serve(cfg: configmod.Config) -> None:
    raise_fd_limit()
    accounts, audit, sync = build(cfg)
    if sync is not None:
        sync.start()
    # Password checks: argon2 is CPU (one worker per core); an LDAP bind waits on
    # the network, so as many as PAM steps.
    argon2 = ThreadPoolExecutor(max_workers=PAM_STEP_WORKERS if cfg.directory.is_ldap
                                else max(2, os.cpu_count() or 2), thread_name_prefix="argon2")
    pam_pool = ThreadPoolExecutor(max_workers=PAM_STEP_WORKERS, thread_name_prefix="pam")
    control_pool = ThreadPoolExecutor(max_workers=CONTROL_STEP_WORKERS,
                                      thread_name_prefix="control")
    daemon = Daemon(accounts, Driver(accounts.directory, argon2), pam_pool,
                    control_pool, housekeeping=accounts.markers.resync
                    if isinstance(accounts.markers, LockMarkers) else None)
    await daemon.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    accounts.audit("daemon_started", None, reason=f"jctotpd {__version__}")
    if cfg.clock_control:
        log.warning("TEST MODE: the clock can be moved over the control socket")
    _notify("READY=1")
    log.info("jctotpd %s ready", __version__)
    await stop.wait()
    _notify("STOPPING=1")
    log.info("stopping")
    await daemon.close()
    for pool in (pam_pool, control_pool, argon2):
        pool.shutdown(wait=False, cancel_futures=True)
    if sync is not None:
        sync.stop()
    accounts.store.close()
    audit.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jctotpd", description="pam_jctotp verifier daemon")
    parser.add_argument("--config", default=configmod.DEFAULT_PATH,
                        help=f"config file (default {configmod.DEFAULT_PATH})")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and exit")
    parser.add_argument("--version", action="version", version=f"jctotpd {__version__}")
    args = parser.parse_args(argv)
    # Under systemd the journal adds "jctotpd[pid]:" itself.
    prefix = "" if os.environ.get("JOURNAL_STREAM") else "jctotpd[%(process)d]: "
    logging.basicConfig(stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # no client-chosen control bytes in the log
        handler.setFormatter(PrintableFormatter(prefix + "%(levelname)s %(message)s"))
    try:
        cfg = configmod.load(args.config)
        logging.getLogger().setLevel(cfg.log_level.upper())
        if args.check:
            print(f"{args.config}: OK")
            return 0
        asyncio.run(serve(cfg))
    except JctotpError as exc:
        log.error("%s", exc)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
