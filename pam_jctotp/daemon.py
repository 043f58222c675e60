"""jctotpd: the verifier daemon (foreground; systemd Type=notify).

The one place that opens the store and the key and wires the layers together:
store + directory + accounts (core) + driver and servers (transport).
"""

from __future__ import annotations

import argparse
import base64
import asyncio
import ctypes
import dataclasses
import logging
import os
import resource
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, cast

from . import __version__, config as configmod, logs, metrics, preflight
from .audit import AuditLog
from .clock import Clock
from .core import notices
from .core.accounts import TOTP_PURPOSE, Accounts
from .core.totp import Totp, decode_key
from .crypto import SecretBox, key_check, load_or_create_key, read_key
from .directory import Directory, Identity
from .directory.local import LocalDirectory, Passwords
from .directory.nss import NssAccounts
from .errors import ConfigError, JctotpError, StoreError
from .fleet import breakglass
from .fleet.accounts import SystemAccountSync
from .fleet.audit import FleetAudit
from .fleet.sync import FleetSync
from .mail import Mailer
from .model import ExitCode, UserRecord
from .secret import Secret
from .pam_processes import PamProcesses, use_shared_unknown_names
from .store import Store
from .store.markers import LockMarkers
from .store.sqlite import SqliteStore
from .transport.driver import Driver
from .transport.fairqueue import FairPool
from .transport.server import Daemon

if TYPE_CHECKING:
    from .store.postgres import PostgresStore

PAM_STEP_WORKERS = 16      # PAM logins running at once (transport/pam_server.py); the
                           # ones waiting for a person, argon2 or fail_delay hold none
CONTROL_STEP_WORKERS = 4   # control requests: their own pool, so useradd never queues a login

M_MMAP_THRESHOLD = -3           # glibc <malloc.h>
MMAP_THRESHOLD = 128 * 1024      # glibc's initial value, made fixed
EX_SOFTWARE = 70                 # sysexits.h: an internal error (logged as one line)

log = logging.getLogger("jctotpd")


def _use_uvloop() -> None:
    """uvloop (python3-uvloop, >= 0.17 in Debian 12) when installed: its loop and
    thread wake-ups cost about half of the plain loop's per login. The plain loop
    otherwise, or with JCTOTPD_LOOP=asyncio in the environment."""
    if os.environ.get("JCTOTPD_LOOP") == "asyncio":
        return
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        log.debug("uvloop not installed: the plain asyncio loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    log.debug("event loop: uvloop %s", getattr(uvloop, "__version__", "?"))


def _return_big_blocks() -> None:
    """A fixed mmap threshold, so argon2's blocks (memory_kib, 19 MiB by default, one
    per worker) go back to the system when a hash ends. glibc's threshold is dynamic:
    freeing the first such block raises it above 19 MiB, later blocks then come from
    arenas that are never returned, and RSS stays at its peak (idle + workers x
    memory_kib) after a login storm."""
    try:
        if ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
            # e.g. under a sanitizer's malloc: nothing to tune, nothing to warn about
            log.debug("mallopt(M_MMAP_THRESHOLD) had no effect: argon2's memory may be kept")
    except (OSError, AttributeError):  # not glibc
        log.debug("no mallopt here: memory of argon2 may be kept after a storm")


def _notify(state: str) -> None:
    """sd_notify without a hard dependency: python3-sdnotify if present."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    try:
        import sdnotify
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


def open_store(cfg: configmod.Config, create: bool = False, key: bytes | None = None) -> Store:
    """SQLite in state_dir, or the fleet's PostgreSQL when `database:` names one.
    `create` (jctotp fleet init only) makes the fleet schema in an empty database.
    `key` (jctotpd): the fleet key, checked against the database before any call is
    served; the daemon starts even while the database is down (open_serving)."""
    os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    if not cfg.database:
        return SqliteStore(cfg.db_path)
    try:
        from .store.postgres import PostgresStore
    except ImportError:
        raise StoreError("config key 'database' needs psycopg 3 and psycopg_pool "
                         "(apt install python3-psycopg python3-psycopg-pool)") from None
    sizes: dict[str, Any] = {"min_size": cfg.database_pool_min, "max_size": cfg.database_pool_max,
             "pgbouncer": cfg.database_pgbouncer, "sync_interval": cfg.fleet_sync_interval}
    if key is None:
        return PostgresStore(cfg.database, create=create, **sizes)
    fleet = PostgresStore(cfg.database, create=create, key=(key_check(key), str(cfg.key_path)),
                          serving=True, unseal=unsealer(key), **sizes)
    fleet.expected_rule = (cfg.totp_digits, cfg.totp_period, cfg.totp_window)
    return fleet


def unsealer(key: bytes) -> Callable[[bytes, str], bytes]:
    """Opens a TOTP key sealed with the fleet key (before the database kept them)."""
    box = SecretBox(key)
    return lambda blob, name: decode_key(box.open(blob, name, TOTP_PURPOSE))


def sealer(box: SecretBox) -> Callable[[str, bytes], bytes]:
    """Seals a key the database gave for the break-glass copy, as SQLite keeps it."""
    return lambda name, key: box.seal(Secret(base64.b32encode(key).decode("ascii")), name,
                                      TOTP_PURPOSE)


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
    if create and fleet.meta("key_check") is None:
        fleet.claim_meta("key_check", key_check(key))
    fleet.verify_key(key_check(key), str(cfg.key_path))
    return key


def open_serving(cfg: configmod.Config) -> tuple[Store, bytes]:
    """jctotpd's store and key. A fleet host reads its key file first (a host that never
    had one refuses to start), and starts even while the database is down: logins
    fail closed (break-glass serves its group from this host's copy) until the
    database answers, its schema and key check then verified before any is served."""
    if cfg.database:
        key = read_key(cfg.key_path)
        return open_store(cfg, key=key), key
    store = open_store(cfg)
    try:
        return store, open_key(cfg, store)
    except JctotpError:
        store.close()
        raise


def build(cfg: configmod.Config) -> tuple[Accounts, AuditLog | FleetAudit, FleetSync | None]:
    store, key = open_serving(cfg)
    box = SecretBox(key)
    system = NssAccounts()
    local = AuditLog(cfg.audit_log, cfg.audit_syslog, cfg.host_name)
    clock = Clock(controllable=cfg.clock_control)
    source = store   # the markers follow the database itself (never a break-glass copy)
    markers = LockMarkers(os.path.join(cfg.state_dir, "locked"),
                          lambda: [r.name for r in source.list() if r.locked_at is not None])
    markers.resync()   # before the sockets listen: a lock made while we were down counts
    sync = None
    audit: AuditLog | FleetAudit = local
    late: list[Directory] = []   # the fleet's account sync asks it for UIDs, made below
    if cfg.database:
        fleet = cast("PostgresStore", store)
        audit = FleetAudit(local, fleet)
        store, sync = fleet_copies(cfg, fleet, system, markers, clock, audit,
                                   lambda name: late[0].identity(name) if late else None,
                                   sealer(box))
    directory = make_directory(cfg, store, system)
    late.append(directory)
    metrics.watch(store)
    accounts = Accounts(cfg, metrics.timed(store, "database_seconds"),
                        metrics.timed(directory, "directory_seconds"), system, box,
                        clock, audit, markers)
    if cfg.smtp is not None:
        accounts.outbox = Mailer(cfg.smtp)  # every process mails what it audits (locks)
    return accounts, audit, sync


def housekeeping(accounts: Accounts) -> Callable[[], None] | None:
    """What jctotpd does every minute: lock markers follow the store; reminder mails."""
    jobs: list[Callable[[], None]] = []
    if isinstance(accounts.markers, LockMarkers):
        jobs.append(accounts.markers.resync)
    if accounts.outbox.enabled and accounts.config.enrollment_reminder_days:
        last = [accounts.now()]

        def reminders() -> None:
            now = accounts.now()
            notices.remind(accounts, last[0], now)
            last[0] = now
        jobs.append(reminders)
    if not jobs:
        return None

    def run() -> None:
        for job in jobs:
            job()
    return run


def fleet_copies(cfg: configmod.Config, fleet: "PostgresStore", system: NssAccounts,
                 markers: LockMarkers, clock: Clock, audit: FleetAudit,
                 identity_of: Callable[[str], Identity | None] = lambda name: None,
                 seal: Callable[[str, bytes], bytes] | None = None
                 ) -> tuple[Store, FleetSync]:
    """The host-local copies a fleet host keeps current (fleet/sync.py), and the store
    the daemon uses: the fleet's, with the break-glass fallback when configured."""
    steps: list[Callable[[list[UserRecord]], Any]] = [
        lambda rows: markers.sync(r.name for r in rows if r.locked_at is not None)]
    if cfg.create_system_accounts:
        steps.append(SystemAccountSync(system, Path(cfg.state_dir) / "system-accounts",
                                       identity_of))
    store: Store = fleet
    if cfg.break_glass_group:
        group = cfg.break_glass_group
        copy = SqliteStore(Path(cfg.state_dir) / "break-glass.db")
        glass = breakglass.BreakGlassStore(
            fleet, copy, Path(cfg.state_dir) / breakglass.MATCHED,
            max_age=cfg.break_glass_max_age, wall=clock.now, audit=audit.write)
        def member(name: str) -> bool:
            return group in system.groups_of(name)

        def copy_rows(rows: list[UserRecord]) -> int:
            mine = [r for r in rows if member(r.name)]   # the database's keys of those
            assert seal is not None
            return glass.refresh(breakglass.with_keys(mine, fleet.break_glass_keys(), seal),
                                 member)
        steps.append(copy_rows)
        store = cast(Store, glass)
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


# Read once at start (sockets, the store, pools, the test clock): a reload
# that changes them keeps the running value and says a restart is needed.
# The directory too: an LDAP directory holds connections, its password file and
# CA; with LDAP, the group keys as well (their DN spellings are read once,
# directory/ldap.py), so a reload keeps them until a restart.
RESTART_KEYS = ("pam_socket", "control_socket", "state_dir", "max_connections", "pam_processes",
                "password_hash", "testing", "directory",
                # the fleet: the store, the key, the audit name and the sync are made at start
                "database", "secret_key_file", "host_name", "break_glass_group",
                # the mail thread is made at start with its server (issue 23)
                "smtp",
                "database_pgbouncer", "database_pool_min", "database_pool_max",
                "fleet_sync_interval",
                # the metrics' files, writer thread and port are made at start
                "metrics_textfile", "metrics_interval", "metrics_listen")
LDAP_RESTART_KEYS = ("admin_groups", "exempt_groups", "mfa_groups")


def restart_keys(cfg: configmod.Config) -> tuple[str, ...]:
    return RESTART_KEYS + (LDAP_RESTART_KEYS if cfg.directory.is_ldap else ())


LAST_GOOD = "config.last-good.yaml"


def remember_good(cfg: configmod.Config, text: str) -> None:
    """Keep the text of the config we run with in state_dir: a restart with a
    broken config.yaml starts with it instead of leaving every login refused."""
    final = os.path.join(cfg.state_dir, LAST_GOOD)
    try:
        fd = os.open(final + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(final + ".tmp", final)
    except OSError as exc:
        log.warning("cannot keep a copy of the running config in %s: %s", final, exc)


def load_at_start(path: str) -> tuple[configmod.Config, str | None]:
    """The config to start with, and its text (None: the last good copy).

    A broken file stops the start, unless an earlier start or reload left a
    last good copy: then every problem is logged as an error and the daemon
    serves with that copy (as a refused reload would), so `systemctl restart`
    after a bad edit never leaves every login refused."""
    try:
        return configmod.load_with_text(path)
    except ConfigError as exc:
        partial, _ = configmod.load_collect(path, daemon=True)
        state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or partial.state_dir
        good = os.path.join(state_dir, LAST_GOOD)
        if not os.path.isfile(good):
            raise
        for line in exc.problems:
            log.error("%s", line)
        cfg, _ = configmod.load_with_text(good)
        log.error("%s is broken (above): serving with the last good config (%s); fix the "
                  "file, then systemctl reload jctotpd", path, good)
        return cfg, None


def reload(path: str, accounts: Accounts, daemon: Daemon, audit: AuditLog) -> bool:
    """SIGHUP: validate the file first; a broken one is refused (one error line)
    and the running config stays. Then reopen the audit log (logrotate)."""
    old = accounts.config
    try:
        new, text = configmod.load_with_text(path)
    except JctotpError as exc:
        log.error("reload refused, keeping the running config: %s",
                  "; ".join(getattr(exc, "problems", None) or [str(exc)]).replace("\n", " "))
        audit.reopen()
        return False
    except Exception:  # never let a reload take the daemon down
        log.exception("reload failed, keeping the running config")
        return False
    kept = [k for k in restart_keys(old) if getattr(new, k) != getattr(old, k)]
    if kept:
        log.warning("reload: %s changed; that takes a restart (systemctl restart jctotpd), "
                    "the running value stays", ", ".join(kept))
        new = dataclasses.replace(new, **{k: getattr(old, k) for k in kept})
    changed = [f.name for f in dataclasses.fields(new) if getattr(new, f.name) !=
               getattr(old, f.name)]
    # One reference swap each: a login in flight finishes with the config it read.
    accounts.totp = Totp(new.totp_digits, new.totp_period, new.totp_window)
    accounts.config = new
    daemon.config = new
    if isinstance(accounts.store, breakglass.BreakGlassStore):
        accounts.store.max_age = new.break_glass_max_age
    audit.use_syslog = new.audit_syslog
    logs.setup_auth(syslog_too=new.audit_syslog)
    remember_good(new, text)
    audit.reopen(new.audit_log)
    logging.getLogger().setLevel(new.log_level.upper())
    log.info("reloaded %s (%s); audit log reopened", path,
             "changed: " + ", ".join(changed) if changed else "no change")
    return True


def argon2_pool(cfg: configmod.Config) -> FairPool:
    """Password checks (jctotpd's and each PAM process's): argon2 is CPU (one worker
    per core); an LDAP bind waits on the network, so as many as PAM steps. Queued
    fairly per requester in front of the workers (transport/fairqueue.py)."""
    workers = PAM_STEP_WORKERS if cfg.directory.is_ldap else max(2, os.cpu_count() or 2)
    return FairPool(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2"),
                    workers)


def _state_where(cfg: configmod.Config) -> str:
    """For the start line: which store this run uses (a host joining the fleet
    that was not restarted still says SQLite)."""
    if not cfg.database:
        return f"state: SQLite {cfg.db_path}"
    from .store.postgres import describe   # psycopg is loaded already then
    return f"state: fleet database {describe(cfg.database)}, as host {cfg.host_name}"


async def serve(cfg: configmod.Config, path: str = configmod.DEFAULT_PATH,
                text: str | None = None) -> None:
    raise_fd_limit()
    metrics.enable(cfg, parent=True)   # before the PAM processes start: they inherit it
    accounts, audit, sync = build(cfg)
    exporter = metrics.Exporter(cfg, accounts) if metrics.on() else None
    audit_file = audit.local if isinstance(audit, FleetAudit) else audit   # reopened on SIGHUP
    if sync is not None:
        sync.start()
    if text is not None:
        remember_good(cfg, text)
    argon2 = argon2_pool(cfg)
    control_pool = ThreadPoolExecutor(max_workers=CONTROL_STEP_WORKERS,
                                      thread_name_prefix="control")
    daemon = Daemon(accounts, Driver(accounts.directory, argon2), PAM_STEP_WORKERS,
                    control_pool, housekeeping=housekeeping(accounts))
    use_shared_unknown_names(accounts, cfg)
    await daemon.start()
    extra = None
    if cfg.pam_processes > 1:
        assert daemon.pam.listener is not None
        extra = PamProcesses(cfg.pam_processes, path, daemon.pam.listener)
        extra.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloading: list[asyncio.Future[bool]] = []

    def on_sighup() -> None:
        # Off the loop (the file is parsed and checked); one at a time, and the
        # sockets are served throughout.
        if reloading and not reloading[-1].done():
            log.info("SIGHUP: a reload is already running")
            return
        reloading[:] = [loop.run_in_executor(control_pool, reload, path, accounts, daemon,
                                             audit_file)]
        if extra is not None:
            extra.signal(signal.SIGHUP)  # each reloads the file itself
    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    accounts.audit("daemon_started", None, reason=f"jctotpd {__version__}")
    if exporter is not None:
        exporter.start()
    if cfg.clock_control:
        log.warning("TEST MODE: the clock can be moved over the control socket")
    _notify("READY=1")
    log.info("jctotpd %s ready (%s)", __version__, _state_where(cfg))
    await stop.wait()
    _notify("STOPPING=1")
    log.info("stopping")
    if extra is not None:
        await loop.run_in_executor(None, extra.stop)
    await daemon.close()
    for pool in (control_pool, argon2):
        pool.shutdown(wait=False, cancel_futures=True)
    if sync is not None:
        sync.stop()
    if isinstance(accounts.outbox, Mailer):
        accounts.outbox.close()
    if exporter is not None:
        exporter.stop()
    accounts.store.close()
    audit.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jctotpd", description="pam_jctotp verifier daemon")
    parser.add_argument("--config", default=configmod.DEFAULT_PATH,
                        help=f"config file (default {configmod.DEFAULT_PATH})")
    parser.add_argument("--check", action="store_true",
                        help="check that the config would start (modules, key file, "
                        "database, directory) and exit")
    parser.add_argument("--strict", action="store_true",
                        help="with --check: a database or directory that does not answer "
                        "is an error, not a warning")
    parser.add_argument("--version", action="version", version=f"jctotpd {__version__}")
    args = parser.parse_args(argv)
    logs.setup()  # journal priorities, printable lines (logs.py)
    try:
        if args.check:
            return check(args.config, args.strict)
        cfg, text = load_at_start(args.config)
        logging.getLogger().setLevel(cfg.log_level.upper())
        logs.setup_auth(syslog_too=cfg.audit_syslog)
        _return_big_blocks()
        _use_uvloop()
        asyncio.run(serve(cfg, args.config, text))
    except JctotpError as exc:
        for line in getattr(exc, "problems", None) or [str(exc)]:
            log.error("%s", line)
        return exc.exit_code
    except ImportError as exc:
        log.error("%s", preflight.missing_module_error(exc) or f"cannot start: {exc}")
        return ExitCode.CONFIG
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - one line for the sysadmin, never a traceback
        log.error("internal error, jctotpd stops: %s: %s (JCTOTPD_DEBUG=1 logs the "
                  "traceback)", type(exc).__name__, " ".join(str(exc).split()))
        if os.environ.get("JCTOTPD_DEBUG"):
            log.exception("traceback")
        return EX_SOFTWARE
    return 0


def check(path: str, strict: bool) -> int:
    """`jctotpd --check [--strict]`: the config file, then what would stop the start
    (preflight.py). Problems go to stderr, one line each; 0 only if it would start."""
    cfg = configmod.load(path)
    found = preflight.check(cfg)
    for line in found.errors:
        print(f"{path}: error: {line}", file=sys.stderr)
    for line in found.warnings:
        print(f"{path}: {'error' if strict else 'warning'}: {line}", file=sys.stderr)
    if found.errors or (strict and found.warnings):
        return ExitCode.CONFIG
    print(f"{path}: OK" + (f" ({len(found.warnings)} warning(s))" if found.warnings else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
