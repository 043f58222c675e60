"""The daemon's one source of time.

Tests move time with an offset set over the control socket; that is only
possible when the config says `testing: {clock_control: true}` AND the daemon
runs with JCTOTPD_TESTING=1 in its environment, so a production config
cannot switch it on by accident (config.py enforces both).

Two test knobs: `offset` moves time itself (every clock the daemon reads,
the fleet database's included: a lock made now runs out when the offset
passes unlock_after); `skew` makes this host's own clock wrong, as a host
whose NTP is broken (its TOTP checks and audit times see it; a fleet's lock
times, which come from the database's clock, do not).
"""

from __future__ import annotations

import time


class Clock:
    def __init__(self, controllable: bool = False) -> None:
        self._offset = 0.0
        self._skew = 0.0
        self.controllable = controllable

    def now(self) -> float:
        """This host's clock."""
        return time.time() + self._skew + self._offset

    def set_offset(self, seconds: float) -> None:
        if not self.controllable:
            raise PermissionError("clock control is disabled (production mode)")
        self._offset = float(seconds)

    def set_skew(self, seconds: float) -> None:
        if not self.controllable:
            raise PermissionError("clock control is disabled (production mode)")
        self._skew = float(seconds)

    @property
    def offset(self) -> float:
        return self._offset

    @property
    def skew(self) -> float:
        return self._skew
