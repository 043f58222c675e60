"""`jctotp doctor`: checks a host's setup and names what to fix.

Read-only: it never changes a file. Each check says ok / warn / FAIL and why.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass

from ..config import Config
from ..errors import JctotpError
from .client import request


@dataclass(frozen=True)
class Finding:
    level: str   # "ok" | "warn" | "fail"
    what: str


def _socket(path: str, mode: int, name: str) -> Finding:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Finding("fail", f"{name} {path} does not exist (is jctotpd running?)")
    if not stat.S_ISSOCK(st.st_mode):
        return Finding("fail", f"{name} {path} is not a socket")
    if stat.S_IMODE(st.st_mode) != mode or st.st_uid != 0:
        return Finding("fail", f"{name} {path} has mode {stat.S_IMODE(st.st_mode):o} uid "
                       f"{st.st_uid}; expected {mode:o} uid 0")
    return Finding("ok", f"{name} {path} (mode {mode:o}, root)")


def sshd_findings(effective: dict[str, str]) -> list[Finding]:
    """Judge `sshd -T` output (lower-case keys) for the known traps."""
    out = []
    if effective.get("usepam") != "yes":
        out.append(Finding("fail", "sshd: UsePAM is not yes: pam_jctotp is never asked"))
    if effective.get("kbdinteractiveauthentication") != "yes":
        out.append(Finding("fail", "sshd: KbdInteractiveAuthentication is no (a drop-in read "
                           "before ours?): the code prompt cannot be shown; install "
                           "our drop-in as /etc/ssh/sshd_config.d/00-jctotp.conf"))
    if effective.get("passwordauthentication") == "yes":
        out.append(Finding("fail", "sshd: PasswordAuthentication yes with UsePAM feeds the "
                           "password into every hidden prompt, the code prompt too; set it "
                           "to no"))
    methods = effective.get("authenticationmethods", "any")
    if "keyboard-interactive" not in methods:
        out.append(Finding("warn", f"sshd: AuthenticationMethods is {methods!r}: a key alone "
                           "may log in without a code"))
    if not out:
        out.append(Finding("ok", f"sshd: UsePAM, keyboard-interactive, no password method, "
                           f"methods {methods}"))
    return out


def run(cfg: Config, user: str | None = None) -> list[Finding]:
    found = [_socket(cfg.pam_socket, 0o600, "PAM socket")]
    try:
        # The directory is checked by the daemon, with its own TLS settings and
        # service password (reachable, TLS verified, service bind, `user` found).
        reply = request(cfg.control_socket, "doctor", {"user": user} if user else None,
                        timeout=30)
        found.append(Finding("ok", f"daemon answers on {cfg.control_socket}"))
        problems = (reply.data or {}).get("directory", []) if reply.exit == 0 else [
            f"the daemon's own checks: {reply.message}"]
        found.extend(Finding("fail", p) for p in problems)
        if reply.exit == 0 and not problems:
            kind = (reply.data or {}).get("directory_kind", "")
            found.append(Finding("ok", f"directory {kind}" + (
                ": reachable, TLS verified, service bind works" if kind.startswith("ldap")
                else "") + (f", user {user} found" if user else "")))
    except JctotpError as exc:
        found.append(Finding("fail", str(exc)))
    try:
        st = os.stat(cfg.key_path)
        ok = stat.S_IMODE(st.st_mode) & 0o077 == 0 and st.st_uid == 0
        found.append(Finding("ok" if ok else "fail", f"key file {cfg.key_path} mode "
                             f"{stat.S_IMODE(st.st_mode):o} uid {st.st_uid}"))
    except OSError as exc:
        found.append(Finding("fail", f"key file {cfg.key_path}: {exc.strerror}"))
    shims = glob.glob("/lib/*/security/pam_jctotp.so") + glob.glob("/lib/security/pam_jctotp.so")
    found.append(Finding("ok", f"shim {shims[0]}") if shims else
                 Finding("warn", "pam_jctotp.so is not in a system security dir"))
    users = [f for f in glob.glob("/etc/pam.d/*") if _mentions(f, "pam_jctotp.so")]
    found.append(Finding("ok", "PAM services using it: " + ", ".join(
        os.path.basename(u) for u in users)) if users else
        Finding("warn", "no /etc/pam.d service uses pam_jctotp.so yet"))
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd")
                                    else None)
    if sshd:
        proc = subprocess.run([sshd, "-T"], capture_output=True, text=True, timeout=20)
        if proc.returncode != 0:
            found.append(Finding("fail", f"sshd -T failed: {proc.stderr.strip()[:200]}"))
        else:
            effective: dict[str, str] = {}
            for line in proc.stdout.splitlines():
                key, _, value = line.partition(" ")
                effective.setdefault(key.lower(), value.strip())
            found.extend(sshd_findings(effective))
    return found


def _mentions(path: str, needle: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return any(needle in line and not line.lstrip().startswith("#") for line in fh)
    except OSError:
        return False
