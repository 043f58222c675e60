"""More processes on the PAM socket (`pam_processes: N`, issue 15).

One Python process checks codes on one core (the GIL). With N > 1, jctotpd
starts N-1 children that serve the PAM socket it listens on (the kernel
hands each connection to one of them); jctotpd keeps the control socket,
the fleet sync and the housekeeping. What a login shares with the others
lives where every process sees it: the store (each counter, watermark and
lock one atomic statement, as for a fleet of hosts) and the failure counters
of unknown names (`state_dir/unknown-names.db`: one host, one count, so an
unknown name locks after exactly max_attempts, as a real one does).

A child:
- is started with the listening socket (an inherited descriptor), the config
  path and jctotpd's pid; it builds its own store connections, key and
  directory from the config, as jctotpd does;
- dies with jctotpd (PR_SET_PDEATHSIG), reloads on SIGHUP (jctotpd passes it
  on), finishes its logins for up to 2 s on SIGTERM;
- if it dies (kill -9, a crash), its logins in flight fail closed (the shim
  sees the connection end: AUTHINFO_UNAVAIL, never failmode=open, which is
  only for a socket nobody listens on); jctotpd says so in one line and
  starts another, one second later (up to 30 s when it keeps dying).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

from .. import config as configmod
from .. import logs, metrics

if TYPE_CHECKING:
    from ..core.accounts import Accounts

log = logging.getLogger("jctotpd")

RESTART_FIRST = 1.0    # seconds before a dead child is replaced
RESTART_MOST = 30.0    # ... doubling while it keeps dying within STABLE
STABLE = 60.0
STOP_WAIT = 3.0        # SIGTERM, then SIGKILL after this long
UNKNOWN_NAMES = "unknown-names.db"
PR_SET_PDEATHSIG = 1


class PamProcesses:
    """jctotpd's side: start the children, replace the ones that die, pass on
    SIGHUP, stop them with it."""

    def __init__(self, count: int, config_path: str, listen_fd: int) -> None:
        self.count = count
        self.config_path = config_path
        self.listen_fd = listen_fd   # the PAM socket's, inherited by each child
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for slot in range(1, self.count):
            t = threading.Thread(target=self._keep, args=(slot,), name=f"pam-proc-{slot}",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def _spawn(self, slot: int) -> subprocess.Popen[bytes]:
        fd = self.listen_fd
        cmd = [sys.executable, "-m", "pam_jctotp.daemon.processes", "--config", self.config_path,
               "--listen-fd", str(fd), "--parent", str(os.getpid()), "--slot", str(slot),
               "--of", str(self.count)]
        return subprocess.Popen(cmd, pass_fds=(fd,), stdin=subprocess.DEVNULL)

    def _keep(self, slot: int) -> None:
        """One child slot: start it, wait for it, start another when it dies."""
        pause = RESTART_FIRST
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                proc = self._spawn(slot)
            except OSError as exc:
                log.error("cannot start PAM process %d: %s; trying again in %.0f s", slot, exc,
                          pause)
            else:
                with self._lock:
                    self._procs[slot] = proc
                status = proc.wait()
                if self._stopping.is_set():
                    return
                how = f"signal {-status}" if status < 0 else f"status {status}"
                log.error("PAM process %d (pid %d) exited with %s; its logins in flight "
                          "failed closed; starting another in %.0f s", slot, proc.pid, how,
                          pause)
            if time.monotonic() - started > STABLE:
                pause = RESTART_FIRST
            if self._stopping.wait(pause):
                return
            pause = min(RESTART_MOST, pause * 2)

    def signal(self, sig: int) -> None:
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    def stop(self, wait: float = STOP_WAIT) -> None:
        """SIGTERM (they finish their logins), then SIGKILL what is left after `wait`."""
        self._stopping.set()
        self.signal(signal.SIGTERM)
        end = time.monotonic() + wait
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            try:
                proc.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("PAM process pid %d did not stop in %.0f s: killed", proc.pid, wait)
                proc.kill()
                proc.wait()
        for t in self._threads:
            t.join(1.0)


# --- the child ------------------------------------------------------------------


def _die_with(parent: int) -> None:
    """SIGTERM when jctotpd goes, whatever way it goes (kill -9 included)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("PR_SET_PDEATHSIG failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:  # it was gone before the line above
        sys.exit(0)


def child_main(argv: list[str] | None = None) -> int:
    from ..errors import JctotpError
    from ..fleet.audit import FleetAudit
    from ..transport import limits
    from ..transport.framing import inherited_listener
    from ..transport.pam_server import pam_server
    from . import build, reload, serve  # what jctotpd uses, so both serve the same way

    parser = argparse.ArgumentParser(prog="jctotpd (PAM process)")
    parser.add_argument("--config", required=True)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--slot", type=int, default=1)
    parser.add_argument("--of", type=int, default=2)
    args = parser.parse_args(argv)
    reload.block_signals()   # before any thread starts
    logs.setup()
    _die_with(args.parent)
    try:
        cfg, _ = reload.load_at_start(args.config)
        logging.getLogger().setLevel(cfg.log_level.upper())
        logs.setup_auth(syslog_too=cfg.audit_syslog)
        serve._return_big_blocks()
        metrics.enable(cfg, parent=False)   # jctotpd's directory: one set for the daemon
        accounts, audit, _sync = build.build(cfg)   # the fleet sync is jctotpd's
    except JctotpError as exc:
        for line in getattr(exc, "problems", None) or [str(exc)]:
            log.error("PAM process %d: %s", args.slot, line)
        return exc.exit_code
    use_shared_unknown_names(accounts, cfg)
    audit_file = audit.local if isinstance(audit, FleetAudit) else audit
    running = reload.Running(cfg)
    # the fleet's policy (issue 21): this process polls the change counter itself
    policy_sync = build.attach_policy(cfg, args.config, accounts, running, None)
    if policy_sync is not None:
        policy_sync.start()
    argon2 = build.argon2_pool(cfg)
    server = pam_server(accounts, accounts.directory, argon2, lambda: running.config,
                        limits.Throttled(log), build.PAM_STEP_WORKERS)
    server.serve_on(inherited_listener(args.listen_fd))
    log.info("PAM process %d of %d serving (pid %d)", args.slot, args.of, os.getpid())
    reload.signal_loop(lambda: reload.reload(args.config, accounts, running, audit_file))
    server.close()
    if policy_sync is not None:
        policy_sync.stop()
    argon2.shutdown(wait=False, cancel_futures=True)
    serve.close_outbox(accounts)   # its lock mails: not lost without a word
    accounts.store.close()
    audit.close()
    return 0


def use_shared_unknown_names(accounts: Accounts, cfg: configmod.Config) -> None:
    """With pam_processes > 1, the failure counters of unknown names live in a file
    every process of this host shares (see the module docstring)."""
    if cfg.pam_processes <= 1:
        return
    from ..store.sqlite_names import SharedUnknownNames
    from ..store.unknown_names import UnknownNames
    table = SharedUnknownNames(os.path.join(cfg.state_dir, UNKNOWN_NAMES))
    accounts.unknown = UnknownNames(table=table)


if __name__ == "__main__":
    sys.exit(child_main())
