"""`jctotp doctor`: what it looks at (`Host`) and what it says (`Finding`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass


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
