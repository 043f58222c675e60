"""`jctotp doctor`: checks a host's setup and names what to fix.

Read-only: it never changes a file. Each check says ok / warn / FAIL and why,
naming the file at fault. Everything it reads lives under `Host.root`, so the
tests feed it fake /etc trees; it runs with a broken config.yaml too (each
problem is a finding, the rest of the checks use what could be read).

One module per part: the daemon (daemon.py), the PAM stacks (pam_stack.py),
sshd (sshd.py), the clock (clock.py), root's way in during an outage
(root.py), the portal and mail (portal.py); `run` gathers them.
"""

from __future__ import annotations

import glob
import os
import shutil

from ...config import Config
from . import portal, root
from .clock import clock_findings, clock_sync
from .daemon import daemon_findings, locked_findings, probe_pam_socket
from .host import Finding, Host
from .pam_stack import DEFAULT_TIMEOUT, PamLine, pam_findings, pam_stack
from .sshd import sshd_check, sshd_findings, sshd_lines, sshd_settings

__all__ = ["DEFAULT_TIMEOUT", "Finding", "Host", "PamLine", "clock_findings", "clock_sync",
           "daemon_findings", "locked_findings", "pam_findings", "pam_stack",
           "probe_pam_socket", "real_host", "run", "sshd_check", "sshd_findings",
           "sshd_lines", "sshd_settings"]


def real_host() -> Host:
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd")
                                    else None)
    return Host("/", sshd, clock_sync)


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
    found.extend(root.findings(host, cfg.unknown_users))   # root's way in during an outage
    found.extend(clock_findings(host, fleet=bool(cfg.database)))
    found.extend(portal.findings(cfg, host))   # the portal and mail (issue 23)
    return found
