"""What jctotpd builds at start: the one place that opens the store, the key and
the directory, and wires the layers together (store + directory + accounts).
jctotpd and each of its PAM processes (processes.py) build the same way.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .. import config as configmod
from .. import metrics
from ..audit import AuditLog
from ..clock import Clock
from ..core import notices
from ..core.accounts import TOTP_PURPOSE, Accounts
from ..core.totp import Totp, decode_key
from ..crypto import SecretBox, key_check, load_or_create_key, load_ring, read_key
from ..directory import Directory, Identity
from ..directory.local import LocalDirectory, Passwords
from ..directory.nss import NssAccounts
from ..directory_sync import DirectorySync, Enumerable
from ..errors import ConfigError, JctotpError, StoreError, StoreUnavailable
from ..fleet import breakglass
from ..fleet.accounts import SystemAccountSync
from ..fleet.audit import FleetAudit
from ..fleet.policy import FleetPolicy
from ..fleet.rotate import KeyLearner
from ..fleet.spool import NAME as SPOOL
from ..fleet.spool import Spool
from ..fleet.sync import FleetSync
from ..mail import Mailer
from ..model import UserRecord
from ..secret import Secret
from ..store import Store
from ..store.markers import LockMarkers
from ..store.sqlite import SqliteStore
from ..transport.fairqueue import FairPool

if TYPE_CHECKING:
    from ..store.postgres import PostgresStore

log = logging.getLogger("jctotpd")

PAM_STEP_WORKERS = 16      # PAM logins running at once (transport/pam_server.py); the
                           # ones waiting for a person, argon2 or fail_delay hold none


def make_directory(cfg: configmod.Config, store: Store, system: NssAccounts) -> Directory:
    if cfg.directory.is_ldap:
        from ..directory.ldap import LdapDirectory  # ldap3 only where it is used
        return LdapDirectory(cfg.directory, system, configured_groups(cfg))
    return LocalDirectory(store, Passwords(cfg.password_params), system)


def configured_groups(cfg: configmod.Config) -> tuple[str, ...]:
    """The groups the config names (an LDAP directory matches their DN spellings)."""
    return (cfg.admin_groups + cfg.exempt_groups + cfg.mfa_groups
            + tuple(getattr(cfg, "login_groups", ())))


def offline_directory(cfg: configmod.Config, directory: Directory, system: NssAccounts,
                      clock: Clock, audit: AuditLog | FleetAudit,
                      max_age: Callable[[], float]) -> Directory:
    """LDAP with break_glass_group's password verifiers for its outages (directory/offline.py);
    `max_age` is read at each use, so a reload's break_glass_password_max_age applies."""
    from ..directory import offline
    group = cfg.break_glass_group
    assert group is not None
    verifiers = offline.Verifiers(Path(cfg.state_dir) / offline.FOLDER,
                                  Passwords(cfg.password_params), wall=clock.now)
    wrapped = offline.OfflineDirectory(directory, verifiers, system, group,
                                       max_age=max_age,
                                       audit=lambda event, user, **fields: audit.write(
                                           event, user, now=clock.now(), **fields))
    return cast(Directory, wrapped)


def open_store(cfg: configmod.Config, create: bool = False, key: bytes | None = None) -> Store:
    """SQLite in state_dir, or the fleet's PostgreSQL when `database:` names one.
    `create` (jctotp fleet init only) makes the fleet schema in an empty database.
    `key` (jctotpd): the fleet key, checked against the database before any call is
    served; the daemon starts even while the database is down (open_serving)."""
    os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    if not cfg.database:
        return SqliteStore(cfg.db_path)
    try:
        from ..store.postgres import PostgresStore
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


def open_fleet(cfg: configmod.Config, create: bool = False) -> PostgresStore:
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


Sync = FleetSync | DirectorySync


def protected_groups(cfg: configmod.Config) -> frozenset[str]:
    """Local groups no directory user may join by a GID collision: break_glass_group and
    the shipped sshd drop-in's key-alone group (sshd_config.d/jctotp-key.conf)."""
    return frozenset(g for g in (cfg.break_glass_group, "automation") if g)


def build(cfg: configmod.Config) -> tuple[Accounts, AuditLog | FleetAudit, list[Sync]]:
    store, key = open_serving(cfg)
    box = SecretBox(load_ring(cfg.key_path) if cfg.database else key)   # rotate-key's ring
    system = NssAccounts(protected_groups=protected_groups(cfg))
    local = AuditLog(cfg.audit_log, cfg.audit_syslog, cfg.host_name)
    clock = Clock(controllable=cfg.clock_control)
    source = store   # the markers follow the database itself (never a break-glass copy)
    markers = LockMarkers(os.path.join(cfg.state_dir, "locked"),
                          lambda: [r.name for r in source.list() if r.locked_at is not None])
    markers.resync()   # before the sockets listen: a lock made while we were down counts
    syncs: list[Sync] = []
    fleet_sync = None
    audit: AuditLog | FleetAudit = local
    late: list[Directory] = []   # the fleet's account sync asks it for UIDs, made below
    if cfg.database:
        fleet = cast("PostgresStore", store)
        from ..fleet.audit_table import AuditEvents  # psycopg only with a fleet
        audit = FleetAudit(local, AuditEvents(fleet), Spool(Path(cfg.state_dir) / SPOOL),
                           down=lambda: fleet.breaker.down)
        audit.in_database = fleet.audited_in_database
        store, fleet_sync = fleet_copies(cfg, fleet, system, markers, clock, audit,
                                         lambda name: late[0].identity(name) if late else None,
                                         sealer(box))
        learner = KeyLearner(fleet, box, cfg.key_path)   # a key rotated meanwhile
        box.learn = learner
        fleet_sync.steps.append(learner.sync)
        syncs.append(fleet_sync)
    directory = make_directory(cfg, store, system)
    if cfg.break_glass_group and cfg.directory.is_ldap:
        # (`accounts`, made below, holds the config a reload swaps in)
        directory = offline_directory(
            cfg, directory, system, clock, audit,
            max_age=lambda: accounts.config.break_glass_password_max_age)
    late.append(directory)
    metrics.watch(store)
    accounts = Accounts(cfg, metrics.timed(store, "database_seconds"),
                        metrics.timed(directory, "directory_seconds"), system, box,
                        clock, audit, markers)
    if cfg.smtp is not None:
        accounts.outbox = Mailer(cfg.smtp)  # every process mails what it audits (locks)
    if syncs_directory(cfg):
        dsync = directory_sync(cfg, accounts, directory, system)
        if fleet_sync is not None:   # a record made on another host wakes it
            fleet_sync.steps.append(dsync.on_fleet_rows)
        syncs.append(dsync)
    return accounts, audit, syncs


def build_admin(cfg: configmod.Config, admin_uri: str) -> tuple[Accounts, Callable[[], None]]:
    """One admin verb run in the CLI's own process as the schema's owner (`jctotp unlock
    NAME --admin-database URI`, fleet/owner.py): the owner's connection instead of this
    host's role, the fleet key checked as jctotpd checks it, audited as this host
    (host_name). No syncs, no break-glass copy: the running jctotpd keeps those.
    Returns the accounts and what closes them (the audit flushed first)."""
    from ..fleet.audit_table import AuditEvents  # psycopg only with a fleet
    from ..fleet.hosts import admin_config  # (it imports this package: here, not above)
    if not cfg.database:
        raise ConfigError("--admin-database is for a fleet host (`database:` in the config)")
    owner = admin_config(cfg, admin_uri)   # refuses a URI holding a password
    fleet = open_fleet(owner)
    try:
        open_key(owner, fleet)   # this host's key is the fleet's (the key check)
        box = SecretBox(load_ring(cfg.key_path))
    except JctotpError:
        fleet.close()
        raise
    system = NssAccounts(protected_groups=protected_groups(cfg))
    audit = FleetAudit(AuditLog(cfg.audit_log, cfg.audit_syslog, cfg.host_name),
                       AuditEvents(fleet), Spool(Path(cfg.state_dir) / SPOOL),
                       down=lambda: fleet.breaker.down)
    audit.in_database = fleet.audited_in_database
    markers = LockMarkers(os.path.join(cfg.state_dir, "locked"),
                          lambda: [r.name for r in fleet.list() if r.locked_at is not None])
    accounts = Accounts(cfg, fleet, make_directory(cfg, fleet, system), system, box,
                        Clock(), audit, markers)

    def close() -> None:
        try:
            audit.flush()
            audit.close()
        finally:
            fleet.close()
    return accounts, close


def syncs_directory(cfg: configmod.Config) -> bool:
    """The directory sync runs (directory_sync.py): an LDAP directory and login groups.
    It then owns the Linux accounts, and the fleet's account step is left out."""
    return cfg.directory.is_ldap and bool(cfg.login_group_keys) \
        and cfg.directory_sync_interval > 0


def directory_sync(cfg: configmod.Config, accounts: Accounts, directory: Directory,
                   system: NssAccounts) -> DirectorySync:
    made = None
    dsync = DirectorySync(accounts, cast(Enumerable, directory), None,
                          cfg.directory_sync_interval)
    if cfg.makes_accounts:
        made = SystemAccountSync(system, Path(cfg.state_dir) / "system-accounts",
                                 dsync.identity_of)
    dsync.system_accounts = made
    accounts.account_findings = dsync.findings
    accounts.config_watchers.append(dsync.config_changed)
    return dsync


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


def fleet_copies(cfg: configmod.Config, fleet: PostgresStore, system: NssAccounts,
                 markers: LockMarkers, clock: Clock, audit: FleetAudit,
                 identity_of: Callable[[str], Identity | None] = lambda name: None,
                 seal: Callable[[str, bytes], bytes] | None = None
                 ) -> tuple[Store, FleetSync]:
    """The host-local copies a fleet host keeps current (fleet/sync.py), and the store
    the daemon uses: the fleet's, with the break-glass fallback when configured."""
    steps: list[Callable[[list[UserRecord]], Any]] = [
        lambda rows: markers.sync(r.name for r in rows if r.locked_at is not None)]
    if cfg.makes_accounts and not syncs_directory(cfg):
        steps.append(SystemAccountSync(system, Path(cfg.state_dir) / "system-accounts",
                                       identity_of))
    store: Store = fleet
    if cfg.break_glass_group:
        group = cfg.break_glass_group
        copy = SqliteStore(Path(cfg.state_dir) / "break-glass.db")
        glass = breakglass.BreakGlassStore(
            fleet, copy, Path(cfg.state_dir) / breakglass.MATCHED,
            max_age=cfg.break_glass_max_age, wall=clock.now, audit=audit.write)
        audit.break_glass = glass.serving   # its audit events say so
        fleet.on_role_refused = glass.drop  # removed from the fleet: no copy outlives it
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


def argon2_pool(cfg: configmod.Config) -> FairPool:
    """Password checks (jctotpd's and each PAM process's): argon2 is CPU (one worker
    per core); an LDAP bind waits on the network, so as many as PAM steps. Queued
    fairly per requester in front of the workers (transport/fairqueue.py)."""
    workers = PAM_STEP_WORKERS if cfg.directory.is_ldap else max(2, os.cpu_count() or 2)
    return FairPool(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2"),
                    workers)


def state_where(cfg: configmod.Config) -> str:
    """For the start line: which store this run uses (a host joining the fleet
    that was not restarted still says SQLite)."""
    if not cfg.database:
        return f"state: SQLite {cfg.db_path}"
    from ..store.postgres import describe  # psycopg is loaded already then
    return f"state: fleet database {describe(cfg.database)}, as host {cfg.host_name}"


def swap(accounts: Accounts, running: Any, new: configmod.Config) -> None:
    """Run with `new` from now on (a reload, or the fleet's policy changed). One
    reference swap each: a login in flight finishes with the config it read."""
    accounts.totp = Totp(new.totp_digits, new.totp_period, new.totp_window)
    accounts.config = new
    running.config = new
    if isinstance(accounts.store, breakglass.BreakGlassStore):
        accounts.store.max_age = new.break_glass_max_age
    use_groups = getattr(accounts.directory, "use_groups", None)
    if use_groups is not None:
        use_groups(configured_groups(new))
    for watch in accounts.config_watchers:
        watch(new)


def attach_policy(cfg: configmod.Config, path: str, accounts: Accounts, target: Any,
                  sync: FleetSync | None) -> FleetSync | None:
    """The fleet's policy over this host's file (fleet/policy.py), read now (the
    database may be down: the last policy read is kept in state_dir) and on every
    change the fleet sync sees. jctotpd passes its sync; a PAM process gets a sync of
    its own that only polls the change counter (returned, to start and stop)."""
    fleet = accounts.store if cfg.database else None
    policy = FleetPolicy(path, cfg, fleet, lambda new: swap(accounts, target, new),
                         configmod.restart_keys)
    accounts.fleet_policy = policy
    policy.use_file(cfg)   # the cached fleet policy, before anything is served
    if fleet is None:
        return None
    try:
        policy.refresh()
    except StoreError as exc:
        log.warning("fleet policy not read at start (%s): serving with the last one read",
                    exc)
    def step(rows: list[UserRecord]) -> None:   # the users' rows are not needed
        # the store logged the outage once; the last policy read stays
        with contextlib.suppress(StoreUnavailable):
            policy.refresh()
    if sync is not None:
        sync.steps.append(step)
        return None
    from ..store.postgres import ChangePoller
    return FleetSync(cast(Store, _NoRows()),
                     ChangePoller(cast("PostgresStore", fleet), cfg.fleet_sync_interval), [step])


class _NoRows:
    """A PAM process's policy sync reads no users (jctotpd keeps the host copies)."""

    def list(self) -> list[UserRecord]:
        return []
