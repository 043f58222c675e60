"""`jctotp doctor`, the PAM stacks: every service that reaches pam_jctotp.so
(through include/substack too), with its options, is one jctotpd can serve."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

from ...config import Config
from .host import Finding, Host

DEFAULT_TIMEOUT = 10  # the shim's timeout= when the PAM line does not set it

# Services an unknown_users: refuse profile breaks for root and system accounts.
_SYSTEM_SERVICES = ("su", "su-l", "login", "sudo", "runuser", "cron", "other")


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


def _password_twice(service: str, stack: list[PamLine],
                    ours: list[PamLine]) -> list[Finding]:
    """Password asked twice: pam_unix asks it, then pam_jctotp asks the
    directory password again (factors=password,totp is the default)."""
    found: list[Finding] = []
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
    return found


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
        found += _password_twice(service, stack, ours)
        # unknown_users: refuse in a stack root uses: su/login/cron refuse root.
        if cfg.unknown_users == "refuse" and service in _SYSTEM_SERVICES:
            lines = [line for line in ours if line.kind in ("auth", "account")
                     and os.path.basename(line.file) != service]
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
