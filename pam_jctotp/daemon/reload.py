"""The config at start and on SIGHUP, in jctotpd and in each PAM process: the
signal loop their main threads run, the reload, the last good copy.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from dataclasses import dataclass
from typing import Callable

from .. import config as configmod, logs
from ..audit import AuditLog
from ..core.accounts import Accounts
from ..core.totp import Totp
from ..errors import ConfigError, JctotpError
from ..fleet import breakglass

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


def reload(path: str, accounts: Accounts, running: Running, audit: AuditLog) -> bool:
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
    running.config = new
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
