"""One policy for the fleet (issue 21): `jctotp policy show|set`.

The policy keys (config.POLICY_KEYS: attempts, delays, enrollment periods, the group
keys, recovery codes, issuer, ...) may live in the fleet database (store/pg_policy.py).
What a host runs with is then its own file with the fleet's values laid over it,
except for the keys the file lists in `local_overrides` (a deliberate exception).
A file that sets a policy key to another value than the fleet's, without marking
it, is drift: `policy show` and `jctotp doctor` on that host name it; the
database's value is the one in force.

Changes reach every host without a restart: a `policy set` bumps the change counter
and notifies `jctotp_users` (the users' channel), and the fleet sync (sync.py) then
calls `refresh`, which swaps the running config (the same reference swap a SIGHUP
does, daemon.swap). The last fleet policy read is kept in state_dir
(fleet-policy.json), so a host restarted while the database is down keeps it.

On one host (SQLite) the file is the policy: `policy show` shows it, `policy set`
says to edit the file (one place of truth, and `systemctl reload jctotpd`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import yaml

from .. import config as configmod
from ..config import POLICY_KEYS, Config
from ..errors import ConfigError, StoreError, UsageError

log = logging.getLogger("jctotpd.policy")

CACHE = "fleet-policy.json"   # in state_dir: the last fleet policy read (0600)


def as_json(value: Any) -> Any:
    """A config value as JSON has it (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


class FleetPolicy:
    """The running config: this host's file, and the fleet's policy over it."""

    def __init__(self, path: str, file_cfg: Config, store: Any | None,
                 install: Callable[[Config], None],
                 restart_keys: Callable[[Config], tuple[str, ...]]) -> None:
        """`store`: the fleet store (None: one host, SQLite); `install`: swaps a config in
        (daemon.swap); `restart_keys`: the keys a reload does not apply."""
        self.path = path
        self.file = file_cfg               # the file as running (restart keys as started)
        self.store = store
        self._install = install
        self._restart_keys = restart_keys
        self.fleet: dict[str, Any] = {}    # key -> valid value (config form)
        self.rows: dict[str, tuple[Any, float, str]] = {}   # key -> (JSON, set_at, set_by)
        self.invalid: dict[str, str] = {}  # key -> why this host cannot use it
        self._lock = threading.Lock()
        self._cache = Path(file_cfg.state_dir) / CACHE
        if store is not None:
            self._load_cache()

    # --- what runs --------------------------------------------------------------------

    def effective(self) -> Config:
        values = {k: v for k, v in self.fleet.items() if k not in self.file.local_overrides}
        return replace(self.file, **values) if values else self.file

    def use_file(self, cfg: Config) -> Config:
        """A (re)loaded file: install it with the fleet's policy over it."""
        with self._lock:
            self.file = cfg
            effective = self.effective()
            self._install(effective)
        return effective

    def refresh(self) -> list[str]:
        """Read the fleet's policy; install it if it changed. Returns the keys that did.
        StoreError (the fleet sync logs it) while the database is down."""
        assert self.store is not None
        rows = {k: (v, at, by) for k, v, at, by in self.store.fleet_policy()}
        changed = self._take(rows)
        if changed:
            self._save_cache(rows)
        return changed

    def _take(self, rows: dict[str, tuple[Any, float, str]]) -> list[str]:
        valid, invalid = {}, {}
        for key, (value, _, _) in rows.items():
            try:
                valid[key] = configmod.policy_value(key, value)
            except ConfigError as exc:
                invalid[key] = str(exc)
        with self._lock:
            for key in invalid.keys() - self.invalid.keys():
                log.error("fleet policy: %s; this host keeps its own value (a newer "
                          "jctotpd's key, or a bad value written past `policy set`)",
                          invalid[key])
            self.rows, self.invalid = rows, invalid
            changed = sorted(k for k in valid.keys() | self.fleet.keys()
                             if valid.get(k) != self.fleet.get(k))
            if not changed:
                return []
            self.fleet = valid
            self._install(self.effective())
        log.info("fleet policy changed: %s", ", ".join(
            f"{k} ({'local override' if k in self.file.local_overrides else 'in force'})"
            for k in changed))
        return changed

    def _save_cache(self, rows: dict[str, tuple[Any, float, str]]) -> None:
        tmp = self._cache.with_name(self._cache.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({k: list(v) for k, v in rows.items()}, fh)
            os.replace(tmp, self._cache)
        except OSError as exc:
            log.warning("cannot keep the fleet policy in %s: %s", self._cache, exc)

    def _load_cache(self) -> None:
        try:
            cached = json.loads(self._cache.read_text(encoding="utf-8"))
            rows = {str(k): (v[0], float(v[1]), str(v[2])) for k, v in cached.items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, IndexError, AttributeError) as exc:
            log.warning("ignoring %s: %s", self._cache, exc)
            return
        self._take(rows)

    # --- jctotp policy show / set -----------------------------------------------------

    def change(self, key: str, raw: Any, actor: str) -> tuple[Any, Any]:
        """Store one key in the fleet's policy (raw None: remove it) and take it at once
        here (the others follow the notification). Returns (old, new) as JSON."""
        if self.store is None:
            raise UsageError(
                f"`policy set` needs a fleet database (`database:`); on one host the "
                f"config file is the policy: set {key} in {self.path}, then "
                "`systemctl reload jctotpd`")
        new = None
        if raw is not None:
            value = configmod.policy_value(key, raw)
            if key in ("issuer", "account_name"):   # the QR code must fit with the other
                current = self.effective()
                both = {"issuer": current.issuer, "account_name": current.account_name,
                        key: as_json(value)}
                _, problems = configmod.parse_collect(both, daemon=False)
                if problems.items:
                    raise ConfigError("; ".join(m for _, m in problems.items).replace(
                        "config key", "policy key"))
            new = as_json(value)
        elif key not in POLICY_KEYS:
            configmod.policy_value(key, None)   # the error naming the key
        old = self.store.set_fleet_policy(key, new, f"{actor}@{self.file.host_name}")
        # stored: the fleet sync takes it when the database answers again
        with contextlib.suppress(StoreError):
            self.refresh()
        return old, new

    def show(self) -> dict[str, Any]:
        """Each policy key: the fleet's value, this host's file, what runs, and drift;
        and the keys this host's file changed that wait for a reload or a restart."""
        disk, problems, explicit = self._disk()
        running = self.effective()
        keys = []
        for key in POLICY_KEYS:
            fleet = self.rows.get(key)
            in_file = key in explicit
            override = key in disk.local_overrides
            drift = (fleet is not None and key not in self.invalid and in_file
                     and not override and as_json(getattr(disk, key)) != fleet[0])
            keys.append({
                "key": key, "running": as_json(getattr(running, key)),
                "fleet": fleet[0] if fleet else None,
                "set_by": fleet[2] if fleet else None, "set_at": fleet[1] if fleet else None,
                "file": as_json(getattr(disk, key)) if in_file else None,
                "source": ("fleet" if fleet and key not in self.invalid and not override
                           else "local override" if fleet and override
                           else "file" if in_file else "default"),
                "drift": drift, "invalid": self.invalid.get(key)})
        restart = set(self._restart_keys(self.file))
        waiting = [f.name for f in fields(Config) if f.name != "testing"
                   and getattr(disk, f.name) != getattr(self.file, f.name)] if not problems else []
        shown = {"fleet": self.store is not None, "keys": keys,
                 "restart_needed": [k for k in waiting if k in restart],
                 "reload_needed": [k for k in waiting if k not in restart],
                 "file_problems": problems}
        shown["drift"] = drift_lines(shown)
        return shown

    def _disk(self) -> tuple[Config, list[str], set[str]]:
        """The file as it is now, its problems, and the keys it sets itself."""
        disk, problems = configmod.load_collect(self.path, daemon=True)
        try:
            with open(self.path, encoding="utf-8") as fh:
                raw = yaml.safe_load(fh)
        except (OSError, yaml.YAMLError):
            raw = None
        return disk, problems, set(raw) if isinstance(raw, dict) else set()


def drift_lines(shown: dict[str, Any]) -> list[str]:
    """One line per drifting key (for doctor and `policy show`)."""
    return [f"policy key {k['key']}: this host's file says {json.dumps(k['file'])}, the "
            f"fleet database {json.dumps(k['fleet'])} (in force; set by {k['set_by']}): "
            f"remove it from the file, or list it in local_overrides"
            for k in shown["keys"] if k["drift"]]
