"""jctotpd: the verifier daemon (foreground; systemd Type=notify).

The one place that opens the store and the key and wires the layers together:
store + directory + accounts (core) + driver and servers (transport).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import resource
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from . import __version__, config as configmod
from .audit import AuditLog
from .clock import Clock
from .core.accounts import Accounts
from .crypto import SecretBox, load_or_create_key
from .directory import Directory
from .directory.local import LocalDirectory, Passwords
from .directory.nss import NssAccounts
from .errors import JctotpError
from .printable import PrintableFormatter
from .store.markers import LockMarkers
from .store.sqlite import SqliteStore
from .transport.driver import Driver
from .transport.server import Daemon

PAM_STEP_WORKERS = 16      # PAM conversation steps (store, NSS, audit) in flight at once
CONTROL_STEP_WORKERS = 4   # control requests: their own pool, so useradd never queues a login

M_MMAP_THRESHOLD = -3           # glibc <malloc.h>
MMAP_THRESHOLD = 128 * 1024      # glibc's initial value, made fixed

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
    log.debug("event loop: uvloop %s", uvloop.__version__)


def _return_big_blocks() -> None:
    """A fixed mmap threshold, so argon2's blocks (memory_kib, 19 MiB by default, one
    per worker) go back to the system when a hash ends. glibc's threshold is dynamic:
    freeing the first such block raises it above 19 MiB, later blocks then come from
    arenas that are never returned, and RSS stays at its peak (idle + workers x
    memory_kib) after a login storm."""
    try:
        if ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
            log.warning("mallopt(M_MMAP_THRESHOLD) refused: memory of argon2 is kept")
    except (OSError, AttributeError):  # not glibc
        log.debug("no mallopt here: memory of argon2 may be kept after a storm")


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


def make_directory(cfg: configmod.Config, store: SqliteStore, system: NssAccounts
                   ) -> Directory:
    if cfg.directory.is_ldap:
        from .directory.ldap import LdapDirectory  # ldap3 only where it is used
        return LdapDirectory(cfg.directory, system,
                             cfg.admin_groups + cfg.exempt_groups + cfg.mfa_groups)
    return LocalDirectory(store, Passwords(cfg.password_hash), system)


def build(cfg: configmod.Config) -> tuple[Accounts, AuditLog]:
    os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    box = SecretBox(load_or_create_key(cfg.key_path))
    store = SqliteStore(cfg.db_path)
    system = NssAccounts()
    directory = make_directory(cfg, store, system)
    audit = AuditLog(cfg.audit_log, cfg.audit_syslog)
    markers = LockMarkers(os.path.join(cfg.state_dir, "locked"),
                          lambda: [r.name for r in store.list() if r.locked_at is not None])
    markers.resync()
    return Accounts(cfg, store, directory, system, box, Clock(controllable=cfg.clock_control),
                    audit, markers), audit


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
    accounts, audit = build(cfg)
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
        _return_big_blocks()
        _use_uvloop()
        asyncio.run(serve(cfg))
    except JctotpError as exc:
        log.error("%s", exc)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
