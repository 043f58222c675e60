"""`jctotp doctor`: checks a host's setup and names what to fix.

Read-only: it never changes a file. Each check says ok / warn / FAIL and why,
naming the file at fault. Everything it reads lives under `Host.root`, so the
tests feed it fake /etc trees; it runs with a broken config.yaml too (each
problem is a finding, the rest of the checks use what could be read).
"""

from __future__ import annotations

import ctypes
import glob
import os
import re
import shutil
import socket
import stat
import subprocess
from dataclasses import dataclass
from typing import Callable, Iterator

from ..config import Config
from ..errors import JctotpError
from ..transport import pam_wire
from .client import request

DEFAULT_TIMEOUT = 10  # the shim's timeout= when the PAM line does not set it
# Services an unknown_users: refuse profile breaks for root and system accounts.
_SYSTEM_SERVICES = ("su", "su-l", "login", "sudo", "runuser", "cron", "other")


@dataclass(frozen=True)
class Finding:
    level: str   # "ok" | "warn" | "fail"
    what: str


@dataclass(frozen=True)
class Host:
    """Where doctor looks: `/` on a real host, a temp tree in the tests."""

    root: str = "/"
    sshd: str | None = None                        # `sshd -T` binary; None: the files only
    clock: Callable[[], tuple[str, str]] | None = None   # -> ("yes"|"no"|"unknown", how)
    probe_sockets: bool = True

    def path(self, absolute: str) -> str:
        return os.path.join(self.root, absolute.lstrip("/"))

    def shown(self, path: str) -> str:
        """A path as it is on the host (without the test root)."""
        if self.root in ("", "/"):
            return path
        return "/" + os.path.relpath(path, self.root)


def real_host() -> Host:
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd")
                                    else None)
    return Host("/", sshd, clock_sync)


# --- the daemon ----------------------------------------------------------------


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
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(pam_wire.frame(PROBE_HELLO))
        header = sock.recv(4, socket.MSG_WAITALL)
        if len(header) != 4:
            raise OSError(0, "closed without a verdict")
        length = pam_wire.check_length(pam_wire.HEADER.unpack(header)[0])
        payload = pam_wire.decode(sock.recv(length, socket.MSG_WAITALL))
    except socket.timeout:
        raise JctotpError(f"PAM socket {path}: no answer within {timeout:.0f}s") from None
    except OSError as exc:
        raise JctotpError(f"PAM socket {path} does not answer: "
                          f"{exc.strerror or exc}") from None
    finally:
        sock.close()
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
        if reply.exit == 0 and not problems:
            kind = (reply.data or {}).get("directory_kind", "")
            found.append(Finding("ok", f"directory {kind}" + (
                ": reachable, TLS verified, service bind works" if kind.startswith("ldap")
                else "") + (f", user {user} found" if user else "")))
        found.extend(locked_findings(cfg))
        from . import doctor_policy   # the fleet's policy, keys waiting (issue 21)
        found.extend(doctor_policy.findings(cfg))
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


# --- PAM stacks ----------------------------------------------------------------


@dataclass(frozen=True)
class PamLine:
    file: str          # as shown (the host path)
    lineno: int
    kind: str          # auth | account | password | session
    control: str
    module: str
    args: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.lineno}"

    def option(self, name: str) -> str | None:
        for a in self.args:
            key, sep, value = a.partition("=")
            if key == name:
                return value if sep else ""
        return None


def _tokens(line: str) -> list[str]:
    # A control in brackets ([success=1 default=ignore]) is one token.
    return re.findall(r"\[[^\]]*\]|\S+", line.split("#", 1)[0])


def pam_stack(host: Host, service: str, _seen: tuple[str, ...] = ()) -> list[PamLine]:
    """The lines of /etc/pam.d/SERVICE with @include / include / substack expanded."""
    path = host.path(f"/etc/pam.d/{service}")
    if service in _seen or not os.path.isfile(path):
        return []
    out: list[PamLine] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, raw in enumerate(fh, 1):
            words = _tokens(raw)
            if not words:
                continue
            if words[0] == "@include" and len(words) > 1:
                out.extend(pam_stack(host, os.path.basename(words[1]), _seen + (service,)))
                continue
            kind = words[0].lstrip("-")
            if len(words) < 3:
                continue
            if words[1] in ("include", "substack"):
                out.extend(line for line in pam_stack(host, os.path.basename(words[2]),
                                                       _seen + (service,)) if line.kind == kind)
                continue
            out.append(PamLine(host.shown(path), n, kind, words[1],
                               os.path.basename(words[2]), tuple(words[3:])))
    return out


def _services(host: Host) -> list[str]:
    return sorted(os.path.basename(p) for p in glob.glob(host.path("/etc/pam.d/*"))
                  if os.path.isfile(p) and not p.endswith((".dpkg-old", ".dpkg-dist", "~")))


def pam_findings(cfg: Config, host: Host) -> list[Finding]:
    found: list[Finding] = []
    users: list[str] = []
    timeouts: dict[str, int] = {}        # where -> timeout= of a pam_jctotp line
    refusing: dict[str, list[str]] = {}  # where -> services whose root it refuses
    for service in _services(host):
        stack = pam_stack(host, service)
        ours = [line for line in stack if line.module == "pam_jctotp.so"]
        if not ours:
            continue
        users.append(service)
        for line in ours:
            value = line.option("timeout")
            timeouts[line.where] = int(value) if value and value.isdigit() else DEFAULT_TIMEOUT
        # Password asked twice: pam_unix asks it, then pam_jctotp asks the
        # directory password again (factors=password,totp is the default).
        for line in ours:
            if line.kind != "auth" or line.option("factors") not in (None, "password,totp"):
                continue
            if line.option("use_first_pass") is not None or \
                    line.option("try_first_pass") is not None:
                continue
            before = stack[:stack.index(line)]
            unix = [b for b in before if b.kind == "auth" and b.module == "pam_unix.so"]
            if unix:
                found.append(Finding("fail", f"PAM service {service}: a password is asked "
                                     f"twice: pam_unix ({unix[0].where}) then pam_jctotp "
                                     f"with factors=password,totp ({line.where}); use "
                                     "factors=totp after pam_unix, or replace "
                                     "`@include common-auth` with the pam_jctotp line"))
        # unknown_users: refuse in a stack root uses: su/login/cron refuse root.
        if cfg.unknown_users == "refuse" and service in _SYSTEM_SERVICES:
            lines = [line for line in ours if line.kind in ("auth", "account")
                     and not os.path.basename(line.file) == service]
            if lines:
                refusing.setdefault(lines[0].where, []).append(service)
    # One finding per line that brings the trap in, naming every service it reaches.
    for where, services in refusing.items():
        named = ", ".join(services)
        found.append(Finding("fail", f"PAM service{'s' if len(services) > 1 else ''} "
                             f"{named}: pam_jctotp comes in through {where} (the "
                             "pam-auth-update profile?) while config.yaml says unknown_users: "
                             "refuse: root and every account not in the directory are "
                             f"refused by {named} (\"User not known to the underlying "
                             "authentication module\"); set unknown_users: ignore, or "
                             "disable the profile (pam-auth-update --disable jctotp)"))
    found.append(Finding("ok", "PAM services using pam_jctotp: " + ", ".join(users)) if users
                 else Finding("warn", "no /etc/pam.d service uses pam_jctotp.so yet"))
    # Issue 9 item 1: a failure verdict waits fail_delay; the shim must not
    # give up first (the daemon clamps it, and logs that it does).
    for where, timeout in sorted(timeouts.items()):
        if cfg.fail_delay >= timeout:
            found.append(Finding("fail", f"{where}: timeout={timeout} is not above "
                                 f"fail_delay {cfg.fail_delay:g} of config.yaml: raise "
                                 "timeout= or lower fail_delay (failures are answered "
                                 "early, and the delay that slows guessing is lost)"))
    return found


# --- sshd ----------------------------------------------------------------------

_ALIASES = {"challengeresponseauthentication": "kbdinteractiveauthentication"}
_SSHD_DEFAULTS = {"usepam": "no", "kbdinteractiveauthentication": "yes",
                  "passwordauthentication": "yes", "authenticationmethods": "any"}


def sshd_lines(host: Host) -> Iterator[tuple[str, int, list[str]]]:
    """(file, line number, words) of every setting in sshd_config and its Include'd
    files, in the order sshd reads them (comments and blank lines left out)."""

    def read(path: str, depth: int) -> Iterator[tuple[str, int, list[str]]]:
        if depth > 16:
            return
        try:
            fh = open(path, encoding="utf-8", errors="replace")
        except OSError:
            return
        with fh:
            for n, raw in enumerate(fh, 1):
                words = raw.split("#", 1)[0].split()
                if words and words[0].lower() == "include":
                    for pattern in words[1:]:
                        full = pattern if pattern.startswith("/") else f"/etc/ssh/{pattern}"
                        for found in sorted(glob.glob(host.path(full))):
                            yield from read(found, depth + 1)
                elif words:
                    yield path, n, words

    yield from read(host.path("/etc/ssh/sshd_config"), 0)


def sshd_settings(host: Host) -> dict[str, tuple[str, str]]:
    """keyword -> (value, file:line) from sshd_config and its Include'd drop-ins,
    read as sshd reads them: in order, the first value of a keyword wins."""
    out: dict[str, tuple[str, str]] = {}
    conditional = None   # the file whose rest is inside a Match block
    for path, n, words in sshd_lines(host):
        key = words[0].lower()
        key = _ALIASES.get(key, key)
        if key == "match":
            conditional = path  # what follows is conditional: not the global setting
        if path == conditional:
            continue
        if key not in out and len(words) > 1:
            out[key] = (" ".join(words[1:]).lower(), f"{host.shown(path)}:{n}")
    return out


def sshd_findings(effective: dict[str, str],
                  origin: dict[str, str] | None = None) -> list[Finding]:
    """Judge sshd's settings (lower-case keys) for the known traps; `origin`
    names the file:line that set each keyword."""
    origin = origin or {}

    def value(key: str) -> str:
        return effective.get(key, _SSHD_DEFAULTS.get(key, ""))

    def where(key: str) -> str:
        return f"set in {origin[key]}" if key in origin else "sshd's default"

    methods = value("authenticationmethods")
    lists = [m.split(",") for m in methods.split()] if methods != "any" else []
    password_allowed = not lists or any("password" in m for m in lists)
    out = []
    if value("usepam") != "yes":
        out.append(Finding("fail", f"sshd: UsePAM {value('usepam')} ({where('usepam')}): "
                           "pam_jctotp is never asked"))
    if value("kbdinteractiveauthentication") != "yes":
        # The file that set it, when it is a drop-in: ours must sort before it.
        culprit = origin.get("kbdinteractiveauthentication", "").rsplit(":", 1)[0]
        first = (f"name our drop-in so that it sorts before {os.path.basename(culprit)}"
                 if "/sshd_config.d/" in culprit else
                 "install our drop-in as /etc/ssh/sshd_config.d/00-jctotp.conf")
        out.append(Finding("fail", "sshd: KbdInteractiveAuthentication no ("
                           f"{where('kbdinteractiveauthentication')}): the code prompt "
                           f"cannot be shown; sshd keeps the first value it reads, so "
                           f"{first} (or fix that file)"))
    if value("passwordauthentication") == "yes" and password_allowed:
        out.append(Finding("fail", "sshd: PasswordAuthentication yes ("
                           f"{where('passwordauthentication')}) with UsePAM feeds the "
                           "password into every hidden prompt, the code prompt too; set it "
                           "to no (or list AuthenticationMethods without password)"))
    if lists and not all("keyboard-interactive" in m or
                         any(x.startswith("keyboard-interactive") for x in m) for m in lists):
        out.append(Finding("warn", f"sshd: AuthenticationMethods {methods} "
                           f"({where('authenticationmethods')}): a method list without "
                           "keyboard-interactive logs in without a code"))
    elif not lists:
        out.append(Finding("warn", "sshd: AuthenticationMethods any "
                           f"({where('authenticationmethods')}): a key alone may log in "
                           "without a code"))
    if not out:
        out.append(Finding("ok", f"sshd: UsePAM, keyboard-interactive, no password method, "
                           f"methods {methods}"))
    return out


def sshd_check(host: Host) -> list[Finding]:
    if not os.path.exists(host.path("/etc/ssh/sshd_config")):
        return [Finding("ok", "sshd: not installed (no /etc/ssh/sshd_config)")]
    settings = sshd_settings(host)
    effective = {k: v for k, (v, _) in settings.items()}
    origin = {k: w for k, (_, w) in settings.items()}
    found: list[Finding] = []
    if host.sshd:  # sshd's own view (Match defaults, its version's defaults) wins
        try:
            proc = subprocess.run([host.sshd, "-T"], capture_output=True, text=True,
                                  timeout=20)
        except (OSError, subprocess.SubprocessError) as exc:
            proc = None
            found.append(Finding("warn", f"sshd -T could not run ({exc}); judged the files"))
        if proc is not None and proc.returncode != 0:
            found.append(Finding("fail", f"sshd -T failed: {proc.stderr.strip()[:200]}"))
        elif proc is not None:
            effective = {}
            for line in proc.stdout.splitlines():
                key, _, val = line.partition(" ")
                effective.setdefault(key.lower(), val.strip().lower())
    return found + sshd_findings(effective, origin)


# --- the clock -----------------------------------------------------------------

STA_UNSYNC = 0x0040


def _adjtimex() -> str:
    """The kernel's own flag (set by chrony, ntpd, systemd-timesyncd): adjtimex(2)
    with modes=0 reads without changing anything."""
    if ctypes.sizeof(ctypes.c_long) != 8:
        return "unknown"  # the offsets below are LP64's
    buf = ctypes.create_string_buffer(512)  # struct timex (208 bytes), zeroed: modes=0
    state = ctypes.CDLL(None, use_errno=True).adjtimex(buf)
    if state < 0:
        return "unknown"
    # modes (int, padded to 8), offset, freq, maxerror, esterror (longs), status (int)
    status = int.from_bytes(buf.raw[40:44], "little", signed=True)
    if state == 5 or status & STA_UNSYNC:  # TIME_ERROR, or no NTP daemon keeps it
        return "no"
    return "yes"


def clock_sync() -> tuple[str, str]:
    """("yes" | "no" | "unknown", how it was found). Never a guess."""
    if shutil.which("timedatectl"):
        proc = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                              capture_output=True, text=True, timeout=10)
        if proc.returncode == 0 and proc.stdout.strip() in ("yes", "no"):
            return proc.stdout.strip(), "timedatectl"
    if shutil.which("chronyc"):
        proc = subprocess.run(["chronyc", "-n", "tracking"], capture_output=True, text=True,
                              timeout=10)
        if proc.returncode == 0 and "Leap status" in proc.stdout:
            synced = re.search(r"Leap status\s*:\s*Normal", proc.stdout) is not None
            return ("yes" if synced else "no"), "chronyc tracking"
    try:
        return _adjtimex(), "adjtimex(2)"
    except (OSError, AttributeError):
        return "unknown", "no timedatectl, chronyc or adjtimex"


def clock_findings(host: Host) -> list[Finding]:
    if host.clock is None:
        return []
    state, how = host.clock()
    if state == "yes":
        return [Finding("ok", f"clock: synchronized ({how})")]
    if state == "no":
        # The kernel's flag says "no NTP daemon disciplines it", not "wrong": a warning.
        level = "warn" if how.startswith("adjtimex") else "fail"
        return [Finding(level, f"clock: NOT synchronized ({how}): TOTP codes are checked "
                        "against this clock, so a drifting one refuses everyone; enable "
                        "NTP (timedatectl set-ntp true, or chrony)")]
    return [Finding("warn", f"clock: synchronization unknown ({how}); check that NTP runs")]


# --- everything ----------------------------------------------------------------


def run(cfg: Config, config_path: str = "", config_problems: list[str] | None = None,
        host: Host | None = None, user: str | None = None) -> list[Finding]:
    """Every finding. `user`: the daemon also checks that its directory finds them."""
    host = host or real_host()
    found: list[Finding] = []
    if config_problems:
        found.extend(Finding("fail", f"config: {p}") for p in config_problems)
    elif config_path:
        found.append(Finding("ok", f"config {config_path} is valid"))
    if host.probe_sockets:
        found.extend(daemon_findings(cfg, user))
    shims = glob.glob(host.path("/lib/*/security/pam_jctotp.so")) + \
        glob.glob(host.path("/lib/security/pam_jctotp.so"))
    found.append(Finding("ok", f"shim {host.shown(shims[0])}") if shims else
                 Finding("warn", "pam_jctotp.so is not in a system security dir"))
    found.extend(pam_findings(cfg, host))
    found.extend(sshd_check(host))
    from . import doctor_root   # root's way in during an outage (issue 21)
    found.extend(doctor_root.findings(host, cfg.unknown_users))
    found.extend(clock_findings(host))
    from . import doctor_portal   # the portal and mail (issue 23)
    found.extend(doctor_portal.findings(cfg, host))
    return found
