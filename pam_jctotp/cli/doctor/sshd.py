"""`jctotp doctor`, sshd: its effective settings (`sshd -T`, or the files)
send logins through PAM keyboard-interactive."""

from __future__ import annotations

import glob
import os
import subprocess
from collections.abc import Iterator

from .host import Finding, Host

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
            # Only an unreadable file is skipped, not an error raised while reading it.
            fh = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - `with fh` below
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
