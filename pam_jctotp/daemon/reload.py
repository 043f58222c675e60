"""The config at start and on SIGHUP, in jctotpd and in each PAM process: the
signal loop their main threads run, the reload, the last good copy.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from .. import config as configmod
from .. import logs
from ..audit import AuditLog
from ..core.accounts import Accounts
from ..errors import ConfigError, JctotpError
from ..fleet.policy import FleetPolicy
from .build import swap

log = logging.getLogger("jctotpd")

SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


@dataclass
class Running:
    """What a reload swaps: the sockets read `.config` at each use."""
    config: configmod.Config


def block_signals() -> None:
    """Before any thread starts: the signals then wait for the main thread's sigwait
    (signal_loop), whatever thread the kernel would have picked."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)


def signal_loop(on_hup: Callable[[], object]) -> int:
    """The main thread of jctotpd and of each PAM process: SIGHUP reloads (one at a
    time; the sockets are served by their own threads throughout); SIGTERM or
    SIGINT ends the loop (returned)."""
    while True:
        sig = signal.sigwait(SIGNALS)
        if sig != signal.SIGHUP:
            return sig
        on_hup()


# Keys a reload cannot apply: declared in the schema (restart=True).
restart_keys = configmod.restart_keys


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


def reload(path: str, accounts: Accounts, running: Running, audit: AuditLog,
           announce: bool = False) -> bool:
    """SIGHUP: validate the file first; a broken one is refused (one error line)
    and the running config stays. Then reopen the audit log (logrotate).
    `announce` (jctotpd, not its PAM processes): audit `config_reloaded` with the
    names of the keys that changed (never a value) and of those kept for a restart."""
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
    policy = accounts.fleet_policy
    before = policy.file if isinstance(policy, FleetPolicy) else old
    changed = [f.name for f in dataclasses.fields(new) if getattr(new, f.name) !=
               getattr(before, f.name)]
    if isinstance(policy, FleetPolicy):
        policy.use_file(new)   # the fleet's policy stays over the new file
    else:
        swap(accounts, running, new)
    if announce:
        accounts.audit("config_reloaded", None, changed=",".join(changed) or None,
                       restart_needed=",".join(kept) or None)
    audit.use_syslog = new.audit_syslog
    logs.setup_auth(syslog_too=new.audit_syslog)
    remember_good(new, text)
    audit.reopen(new.audit_log)
    logging.getLogger().setLevel(new.log_level.upper())
    log.info("reloaded %s (%s); audit log reopened", path,
             "changed: " + ", ".join(changed) if changed else "no change")
    return True
