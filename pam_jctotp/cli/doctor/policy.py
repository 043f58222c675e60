"""`jctotp doctor`: the fleet's policy against this host's file, and keys waiting (issue 21).

Asked of jctotpd (`policy.show`, root only): a policy key this host's file sets to
another value than the fleet database's, without listing it in `local_overrides`,
is drift (the database's value is in force, the file misleads whoever reads it);
a key changed in the file that the running daemon has not taken waits for
`systemctl reload jctotpd`, or for a restart when a reload does not apply it
(daemon.RESTART_KEYS: sockets, the store, the directory, ...).
"""

from __future__ import annotations

import os

from ...config import Config
from ..client import request
from .host import Finding


def findings(cfg: Config) -> list[Finding]:
    if os.geteuid() != 0:
        return []
    reply = request(cfg.control_socket, "policy.show", None, timeout=30)
    if reply.exit != 0 or not isinstance(reply.data, dict):
        return []   # an older daemon: nothing to compare
    shown = reply.data
    found = [Finding("warn", line) for line in shown.get("drift", [])]
    for key in shown.get("keys", []):
        if key.get("invalid"):
            found.append(Finding("warn", f"fleet policy key {key['key']} is ignored on this "
                                 f"host: {key['invalid']}"))
    if shown.get("restart_needed"):
        found.append(Finding("warn", "config keys changed in the file wait for a restart "
                             "(a reload keeps the running value): "
                             f"{', '.join(shown['restart_needed'])}: systemctl restart jctotpd"))
    if shown.get("reload_needed"):
        found.append(Finding("warn", "config keys changed in the file are not in force yet: "
                             f"{', '.join(shown['reload_needed'])}: systemctl reload jctotpd"))
    if shown.get("fleet") and not found:
        found.append(Finding("ok", "fleet policy: this host's file agrees with the fleet "
                             "database (no drift), nothing waits for a reload or restart"))
    return found
