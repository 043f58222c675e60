"""jctotpd (issue 19: the daemon's package).

- serve.py: the entry point (`jctotpd`, `python -m pam_jctotp.daemon`), the
  main thread's signal loop, start and stop;
- build.py: the one place that opens the store, the key and the directory;
- reload.py: the config at start and on SIGHUP;
- processes.py: the PAM processes (`pam_processes: N`).
"""

from __future__ import annotations

from .build import PAM_STEP_WORKERS, open_fleet, open_key, open_store, unsealer
from .reload import restart_keys
from .serve import main, raise_fd_limit

__all__ = ["PAM_STEP_WORKERS", "main", "open_fleet", "open_key", "open_store", "raise_fd_limit",
           "restart_keys", "unsealer"]
