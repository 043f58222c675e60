"""The daemon's one source of time.

Tests move time with an offset set over the control socket; that is only
possible when the config says `testing: {clock_control: true}` AND the daemon
runs with JCTOTPD_TESTING=1 in its environment, so a production config
cannot switch it on by accident (config.py enforces both).
"""

from __future__ import annotations

import time


class Clock:
    def __init__(self, controllable: bool = False) -> None:
        self._offset = 0.0
        self.controllable = controllable

    def now(self) -> float:
        return time.time() + self._offset

    def set_offset(self, seconds: float) -> None:
        if not self.controllable:
            raise PermissionError("clock control is disabled (production mode)")
        self._offset = float(seconds)

    @property
    def offset(self) -> float:
        return self._offset
