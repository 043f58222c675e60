"""Prometheus metrics (issue 24): off unless `metrics_textfile` or `metrics_listen` is set.

One set for the daemon, whatever `pam_processes`: counters and histograms live in
prometheus_client's multiprocess files (PROMETHEUS_MULTIPROC_DIR =
state_dir/metrics, set by jctotpd before prometheus_client is first imported and
inherited by its PAM processes), summed by jctotpd when it writes the textfile
or answers a scrape. What describes the state rather than events (locked users,
enrollments pending and expired, database and directory up) jctotpd computes
alone, at collection. No label holds a user name: only bounded sets (the PAM
call, the verdict, a reason, a store method).

Off, every hook below is one global check and prometheus_client is never
imported.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import config as configmod
from .errors import ConfigError, StoreError
from .model import MfaState

if TYPE_CHECKING:
    from .core.accounts import Accounts

log = logging.getLogger("jctotpd.metrics")

ENV = "PROMETHEUS_MULTIPROC_DIR"
_m: dict[str, Any] = {}                  # the metric objects, once enabled
_database_down: Callable[[], bool] = lambda: False   # noqa: E731 - set by watch()


def wanted(cfg: configmod.Config) -> bool:
    return bool(cfg.metrics_textfile or cfg.metrics_listen)


def enable(cfg: configmod.Config, parent: bool) -> None:
    """Create the metrics (jctotpd: `parent`, with an empty directory; a PAM process
    uses the one it inherited). Before anything imports prometheus_client."""
    if not wanted(cfg) or _m:
        return
    # find_spec, not import: prometheus_client reads PROMETHEUS_MULTIPROC_DIR at import
    if importlib.util.find_spec("prometheus_client") is None:
        key = "metrics_textfile" if cfg.metrics_textfile else "metrics_listen"
        raise ConfigError(f"config key {key!r} needs prometheus_client (apt install "
                          "python3-prometheus-client)") from None
    if parent:
        directory = os.path.join(cfg.state_dir, "metrics")
        shutil.rmtree(directory, ignore_errors=True)   # counters start at 0 with the daemon
        os.makedirs(directory, mode=0o700)
        os.environ[ENV] = directory
    elif ENV not in os.environ:
        return
    from prometheus_client import Counter, Histogram
    _m.update(
        logins=Counter("jctotp_logins", "PAM calls answered, by phase (auth, acct) and "
                       "verdict", ["phase", "result"]),
        codes=Counter("jctotp_code_checks", "TOTP or recovery codes checked, by result "
                      "(ok, recovery, wrong, replay)", ["result"]),
        lockouts=Counter("jctotp_lockouts", "accounts locked by failed attempts"),
        enrollments=Counter("jctotp_enrollments", "enrollments in a login, by result "
                            "(enrolled, skipped)", ["result"]),
        break_glass=Counter("jctotp_break_glass_logins", "logins granted from the "
                            "host's break-glass copy while the fleet database was down"),
        watchdog=Counter("jctotp_watchdog_timeouts", "PAM calls failed closed by the "
                         "watchdog, by what stalled", ["stage"]),
        login_seconds=Histogram("jctotp_login_seconds", "a whole PAM call, first frame to "
                                "verdict (a failure includes fail_delay)", ["phase"],
                                buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)),
        directory_seconds=Histogram("jctotp_directory_seconds", "one directory call",
                                    ["call"]),
        database_seconds=Histogram("jctotp_database_seconds", "one store call (a statement "
                                   "or a unit of work's part)", ["call"],
                                   buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1,
                                            .25, .5, 1, 2.5)),
    )


def on() -> bool:
    return bool(_m)


# --- hooks (no-ops when off) ------------------------------------------------------------

def login(phase: str, result: str, seconds: float) -> None:
    if _m:
        _m["logins"].labels(phase, result.lower()).inc()
        _m["login_seconds"].labels(phase).observe(seconds)
        if phase == "auth" and result.lower() == "success" and _database_down():
            _m["break_glass"].inc()   # only the copy can have granted it


def watchdog(stage: str) -> None:
    if _m:
        _m["watchdog"].labels(stage).inc()


_CODE_FAILS = {"wrong_code": "wrong", "replay": "replay"}


def audited(event: str, fields: dict[str, Any]) -> None:
    """Counters that follow the audit trail (every process writes its own events)."""
    if not _m:
        return
    if event == "login_ok" and fields.get("how") in ("totp", "recovery"):
        _m["codes"].labels("ok" if fields["how"] == "totp" else "recovery").inc()
    elif event == "login_fail" and fields.get("reason") in _CODE_FAILS:
        _m["codes"].labels(_CODE_FAILS[fields["reason"]]).inc()
    elif event == "locked":
        _m["lockouts"].inc()
    elif event in ("enrolled", "enrollment_skipped"):
        _m["enrollments"].labels("enrolled" if event == "enrolled" else "skipped").inc()


class Timed:
    """A store or directory whose every method call is timed into `histogram`, labelled
    with the method's name (a bounded set); anything else passes through."""

    def __init__(self, inner: Any, histogram: str) -> None:
        self._inner = inner
        self._histogram = _m[histogram]

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if not callable(value) or attr.startswith("_") or attr == "unit_of_work":
            return value
        child = self._histogram.labels(attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                child.observe(time.perf_counter() - start)
        return timed


def timed(inner: Any, histogram: str) -> Any:
    return Timed(inner, histogram) if _m else inner


def _breaker(store: Any) -> Any:
    """The fleet database's outage state, through a break-glass wrapper; None: SQLite."""
    for candidate in (store, getattr(store, "fleet", None)):
        breaker = getattr(candidate, "breaker", None)
        if breaker is not None:
            return breaker
    return None


def watch(store: Any) -> None:
    """The store whose outage state break-glass logins and database_up follow."""
    global _database_down
    breaker = _breaker(store)
    if breaker is not None:
        _database_down = lambda: breaker.down   # noqa: E731


# --- jctotpd: collect, write the textfile, answer scrapes -------------------------------

class _State:
    """Gauges of the state, computed at collection by jctotpd only (one set per host)."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily
        acc = self.accounts
        down = _database_down()
        yield GaugeMetricFamily("jctotp_database_up", "1 when the store answers (the fleet "
                                "database; always 1 for SQLite)", value=0 if down else 1)
        yield GaugeMetricFamily("jctotp_directory_up", "1 unless the directory (LDAP) is "
                                "known to be unreachable",
                                value=1 if getattr(acc.directory, "up", True) else 0)
        if down:
            return   # no counts from a database that does not answer (the series pause)
        try:
            rows = acc.store.list()
        except StoreError:
            return
        states = [acc.state(r) for r in rows]
        yield GaugeMetricFamily("jctotp_locked_users", "users locked now",
                                value=sum(acc.is_locked(r) for r in rows))
        yield GaugeMetricFamily("jctotp_enrollments_pending", "users who must enroll and "
                                "still may (inside their period, or at their next login)",
                                value=sum(s in (MfaState.PENDING, MfaState.ENROLL_NOW)
                                          for s in states))
        yield GaugeMetricFamily("jctotp_enrollments_expired", "users whose enrollment "
                                "period ended before they enrolled",
                                value=sum(s is MfaState.EXPIRED for s in states))


class Exporter:
    """jctotpd's side: one registry summing every process's files plus the state gauges;
    the textfile rewritten every `metrics_interval` s (atomically: a temp file renamed),
    the HTTP endpoint on loopback."""

    def __init__(self, cfg: configmod.Config, accounts: Accounts) -> None:
        from prometheus_client import CollectorRegistry, multiprocess
        self.cfg = cfg
        self.registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(self.registry)   # type: ignore[no-untyped-call]
        self.registry.register(_State(accounts))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def text(self) -> bytes:
        from prometheus_client import generate_latest
        return bytes(generate_latest(self.registry))

    def start(self) -> None:
        if self.cfg.metrics_listen:
            from prometheus_client import start_http_server
            host, port = configmod.loopback_address(self.cfg.metrics_listen)
            start_http_server(port, addr=host, registry=self.registry)
            log.info("metrics on http://%s/metrics", self.cfg.metrics_listen)
        if self.cfg.metrics_textfile:
            self._thread = threading.Thread(target=self._write_every, name="metrics",
                                            daemon=True)
            self._thread.start()

    def write(self) -> None:
        path = self.cfg.metrics_textfile
        assert path is not None
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(self.text())
        os.chmod(tmp, 0o644)   # node_exporter need not run as root
        os.replace(tmp, path)   # a reader sees the old file or the new, never half

    def _write_every(self) -> None:
        failed = False
        while True:
            try:
                self.write()
                failed = False
            except OSError as exc:
                if not failed:   # once per run of failures, not every interval
                    log.error("metrics textfile %s cannot be written: %s",
                              self.cfg.metrics_textfile, exc)
                failed = True
            if self._stop.wait(self.cfg.metrics_interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            with contextlib.suppress(OSError):
                self.write()   # the last counts
