"""jctotpd: the verifier daemon (foreground; systemd Type=notify).

The main thread is the signal loop (reload.signal_loop, as in each PAM
process); the two sockets are served by the conversation server's threads
(transport/server.py), the housekeeping by a thread of its own.
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
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import __version__, logs, metrics, preflight
from .. import config as configmod
from ..errors import JctotpError
from ..fleet.audit import FleetAudit
from ..fleet.sync import FleetSync
from ..mail import Mailer
from ..model import ExitCode
from ..transport.server import Sockets
from .build import PAM_STEP_WORKERS, argon2_pool, attach_policy, build, housekeeping, state_where
from .reload import Running, block_signals, load_at_start, reload, remember_good, signal_loop

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..core.accounts import Accounts
    from ..transport.fairqueue import FairPool
    from .build import Sync
    from .processes import PamProcesses

M_MMAP_THRESHOLD = -3           # glibc <malloc.h>
MMAP_THRESHOLD = 128 * 1024      # glibc's initial value, made fixed
EX_SOFTWARE = 70                 # sysexits.h: an internal error (logged as one line)
HOUSEKEEPING = 60.0              # seconds between housekeeping runs (lock markers follow the store)

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


def serve(cfg: configmod.Config, path: str = configmod.DEFAULT_PATH,
          text: str | None = None) -> None:
    """Serve until SIGTERM or SIGINT (blocked by the caller: block_signals)."""
    from .processes import PamProcesses, use_shared_unknown_names  # (-m runs it as __main__)

    raise_fd_limit()
    metrics.enable(cfg, parent=True)   # before the PAM processes start: they inherit it
    accounts, audit, syncs = build(cfg)
    running = Running(cfg)   # the sockets read its config at each use
    attach_policy(cfg, path, accounts, running,
                  next((s for s in syncs if isinstance(s, FleetSync)), None))
    exporter = metrics.Exporter(cfg, accounts) if metrics.on() else None
    audit_file = audit.local if isinstance(audit, FleetAudit) else audit   # reopened on SIGHUP
    for sync in syncs:
        sync.start()
    if text is not None:
        remember_good(cfg, text)
    argon2 = argon2_pool(cfg)
    sockets = Sockets(accounts, accounts.directory, argon2, lambda: running.config,
                      PAM_STEP_WORKERS)
    use_shared_unknown_names(accounts, cfg)
    sockets.start()
    extra = None
    if cfg.pam_processes > 1:
        assert sockets.pam.listener is not None
        extra = PamProcesses(cfg.pam_processes, path, sockets.pam.listener.fileno())
        extra.start()
    stop = threading.Event()
    keeper = _housekeeper(housekeeping(accounts), stop)
    accounts.audit("daemon_started", None, reason=f"jctotpd {__version__}")
    if exporter is not None:
        exporter.start()
    if cfg.clock_control:
        log.warning("TEST MODE: the clock can be moved over the control socket")
    _notify("READY=1")
    log.info("jctotpd %s ready (%s)", __version__, state_where(cfg))

    def on_hup() -> None:
        if extra is not None:
            extra.signal(signal.SIGHUP)  # each reloads the file itself
        reload(path, accounts, running, audit_file, announce=True)
    signal_loop(on_hup)
    _notify("STOPPING=1")
    log.info("stopping")
    stop.set()
    _stop(accounts, audit, syncs, exporter, extra, sockets, keeper, argon2)


def _stop(accounts: Accounts, audit: AuditLog | FleetAudit, syncs: list[Sync],
          exporter: metrics.Exporter | None, extra: PamProcesses | None, sockets: Sockets,
          keeper: threading.Thread | None, argon2: FairPool) -> None:
    """What serve() started, stopped in the reverse order."""
    if extra is not None:
        extra.stop()
    sockets.close()
    if keeper is not None:
        keeper.join(2.0)
    argon2.shutdown(wait=False, cancel_futures=True)
    for sync in syncs:
        sync.stop()
    close_outbox(accounts)
    if exporter is not None:
        exporter.stop()
    accounts.store.close()
    audit.close()


def close_outbox(accounts: Accounts) -> None:
    """At a stop, the mails of this process (jctotpd, or a PAM process: each mails what
    it audits): a delivery in flight finishes, those still queued are counted in one
    log line, never dropped without a word."""
    if isinstance(accounts.outbox, Mailer):
        accounts.outbox.close()


def _housekeeper(job: Callable[[], None] | None, stop: threading.Event
                 ) -> threading.Thread | None:
    """Every HOUSEKEEPING seconds, on a thread of its own (a store that stalls it
    delays no signal and no login)."""
    if job is None:
        return None

    def run() -> None:
        while not stop.wait(HOUSEKEEPING):
            try:
                job()
            except Exception:
                log.exception("housekeeping failed")
    t = threading.Thread(target=run, name="housekeeping", daemon=True)
    t.start()
    return t


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
        block_signals()
        serve(cfg, args.config, text)
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

