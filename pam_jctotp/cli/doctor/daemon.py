"""`jctotp doctor`, the daemon: its sockets answer, its store and directory
are healthy, and no lock marker is left behind."""

from __future__ import annotations

import os
import stat

from ...config import Config
from ...errors import JctotpError
from ...transport import pam_wire, probes
from ..client import request
from . import policy
from .host import Finding


def _socket_mode(path: str, mode: int, name: str) -> Finding | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Finding("fail", f"{name} {path} does not exist (is jctotpd running? "
                       "systemctl status jctotpd)")
    if not stat.S_ISSOCK(st.st_mode):
        return Finding("fail", f"{name} {path} is not a socket")
    if stat.S_IMODE(st.st_mode) != mode or st.st_uid != 0:
        return Finding("fail", f"{name} {path} has mode {stat.S_IMODE(st.st_mode):o} uid "
                       f"{st.st_uid}; expected {mode:o} uid 0")
    return None


PROBE_HELLO = "\n".join([pam_wire.VERSION_LINE, "call=acct", "service=jctotp-doctor",
                         "user=jctotp-doctor", "rhost=", "tty=", "factors=totp"])


def probe_pam_socket(path: str, timeout: float = 5.0) -> str:
    """A real request on the PAM socket (an account check of a user no one
    has): the verdict it answers, or ServiceUnavailable. A socket file with no
    daemon behind it, or a daemon that no longer reads it, fails here."""
    try:
        payload = probes.ask_pam_socket(path, PROBE_HELLO, timeout)
    except TimeoutError:
        raise JctotpError(f"PAM socket {path}: no answer within {timeout:.0f}s") from None
    except OSError as exc:
        raise JctotpError(f"PAM socket {path} does not answer: "
                          f"{exc.strerror or exc}") from None
    tag, _, verdict = payload.partition(" ")
    if tag != "VERDICT":
        raise JctotpError(f"PAM socket {path} answered {tag[:16]!r}, not a verdict")
    return verdict


def daemon_findings(cfg: Config, user: str | None = None) -> list[Finding]:
    found: list[Finding] = []
    bad_mode = _socket_mode(cfg.pam_socket, 0o600, "PAM socket")
    if bad_mode is not None:
        found.append(bad_mode)
    elif os.geteuid() != 0:
        found.append(Finding("warn", f"PAM socket {cfg.pam_socket}: only root can ask it; "
                             "run doctor as root to test that it answers"))
    else:
        try:
            verdict = probe_pam_socket(cfg.pam_socket)
            found.append(Finding("ok", f"PAM socket {cfg.pam_socket} answers (verdict "
                                 f"{verdict} for an unknown user)"))
        except JctotpError as exc:
            found.append(Finding("fail", f"{exc}: every login through pam_jctotp fails"))
    try:
        # The directory is checked by the daemon, with its own TLS settings and
        # service password (reachable, TLS verified, service bind, `user` found).
        reply = request(cfg.control_socket, "doctor", {"user": user} if user else None,
                        timeout=30)
        found.append(Finding("ok", f"daemon answers on {cfg.control_socket}"))
        problems = (reply.data or {}).get("directory", []) if reply.exit == 0 else [
            f"the daemon's own checks: {reply.message}"]
        store = (reply.data or {}).get("store", [])
        found.extend(Finding(level, what) for level, what in store)
        found.extend(_store_mismatch(cfg, [what for _, what in store]))
        found.extend(Finding("fail", p) for p in problems)
        found.extend(Finding(level, what) for level, what in
                     (reply.data or {}).get("accounts", []))   # the directory sync's
        if reply.exit == 0 and not problems:
            kind = (reply.data or {}).get("directory_kind", "")
            found.append(Finding("ok", f"directory {kind}" + (
                ": reachable, TLS verified, service bind works" if kind.startswith("ldap")
                else "") + (f", user {user} found" if user else "")))
        found.extend(locked_findings(cfg))
        found.extend(policy.findings(cfg))   # the fleet's policy, keys waiting (issue 21)
    except JctotpError as exc:
        found.append(Finding("fail", str(exc)))
    try:
        st = os.stat(cfg.key_path)
        ok = stat.S_IMODE(st.st_mode) & 0o077 == 0 and st.st_uid == 0
        found.append(Finding("ok" if ok else "fail", f"key file {cfg.key_path} mode "
                             f"{stat.S_IMODE(st.st_mode):o} uid {st.st_uid}"))
    except OSError as exc:
        found.append(Finding("fail", f"key file {cfg.key_path}: {exc.strerror}"))
    return found


def _store_mismatch(cfg: Config, store: list[str]) -> list[Finding]:
    """config.yaml edited, jctotpd not restarted: the daemon still runs on the
    other store (a host joining the fleet, README "Fleet" steps 2-3)."""
    on_fleet = any(what.startswith("fleet database") for what in store)
    if store and bool(cfg.database) != on_fleet:
        now, then = ("SQLite", "the fleet database") if cfg.database else (
            "the fleet database", "SQLite")
        return [Finding("warn", f"jctotpd runs on {now}, the config file says {then}: "
                        "restart jctotpd (systemctl restart jctotpd)")]
    return []


def locked_findings(cfg: Config) -> list[Finding]:
    """A locked user is the week-one call ("I can't log in"): name each one and
    the way out. Root only (user.list is an admin verb)."""
    if os.geteuid() != 0:
        return []
    reply = request(cfg.control_socket, "user.list", None, timeout=30)
    return [Finding("warn", f"user {u['name']} is locked ({u.get('lock_reason') or 'locked'}"
                    f", until {u.get('locked_until') or 'an admin unlocks'}): "
                    f"jctotp unlock {u['name']}")
            for u in (reply.data or []) if reply.exit == 0 and u.get("locked")]
