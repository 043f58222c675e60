"""One offline state for every provider the daemon depends on (SSSD's providers
share one too): the fleet database (store/outage.py's Breaker) and the LDAP
directory (directory/ldap.py).

An outage is one "down" line and one "back" line in the log, however many
logins fail in between (every one of them fails closed): the state, not each
failure, is what is logged. Thread-safe; the first thread to see a change
of state logs it.
"""

from __future__ import annotations

import logging
import threading
import time


class Offline:
    """Up or down, with one log line each way per outage.

    The texts are str.format templates: `down_text` gets {what} and {why};
    `back_text` gets {what}, {where} and {seconds} (the outage's length)."""

    def __init__(self, log: logging.Logger, what: str, down_text: str, back_text: str) -> None:
        self.log = log
        self.what = what
        self.down_text = down_text
        self.back_text = back_text
        self._since: float | None = None
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self._since is not None

    def begin(self) -> bool:
        """Down from now; True for the call that started this outage (it says why:
        `say_down`, now or once it knows)."""
        with self._lock:
            first = self._since is None
            if first:
                self._since = time.monotonic()
        return first

    def say_down(self, why: str) -> None:
        self.log.error(self.down_text.format(what=self.what, why=why))

    def went_down(self, why: str) -> bool:
        """`begin` and, the first time, `say_down`."""
        first = self.begin()
        if first:
            self.say_down(why)
        return first

    def back(self, where: str = "") -> bool:
        """Up again; True (and the one "back" line) when it was down."""
        if self._since is None:   # the common path: no lock
            return False
        with self._lock:
            since, self._since = self._since, None
        if since is None:
            return False
        self.log.warning(self.back_text.format(what=self.what, where=where,
                                               seconds=time.monotonic() - since))
        return True
