"""jctotpd's idle memory with whichever python3 runs this script (issue 15).

    .venv/bin/python bench/idle_rss.py            # the venv's packages
    docker run --rm --network none -v "$PWD":/src:ro -w /src \
        --entrypoint python3 jctotp-base:<tag> bench/idle_rss.py   # Debian 12's python3-*

Starts a private jctotpd (benchlib), waits, and prints its VmRSS 1 s and 3 s
after start, with the versions of the packages that weigh most.
"""

from __future__ import annotations

import importlib.metadata
import sys
import time

from benchlib import memory_mb, private_daemon


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def main() -> int:
    print(f"Python {sys.version.split()[0]} ({sys.executable}); "
          + ", ".join(f"{d} {version(d)}" for d in ("cryptography", "argon2-cffi", "uvloop",
                                                     "PyYAML")))
    with private_daemon(log_level="error") as daemon:
        pid = daemon.proc.pid
        time.sleep(1.0)
        first = memory_mb(pid)["VmRSS"]
        time.sleep(2.0)
        later = memory_mb(pid)["VmRSS"]
    print(f"jctotpd idle: VmRSS {first:.1f} MB 1 s after start, {later:.1f} MB at 3 s "
          "(target ≤ 40 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
