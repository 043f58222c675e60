"""Where the failure counters of unknown names live, bounded without an oracle.

A table of every name ever tried would grow without end (names come from
remote clients), so it holds at most `size` names. What it may forget is the
rule of this module (issue 20 item 4): a table that dropped its least recently
seen names forgot a locked unknown name after 4,200 fresh ones, which then
answered "wrong password" again where a real locked user still said "locked".

- Names are spread over buckets of SLOTS names by HMAC-SHA256 under a random
  key of the table's own: nobody can aim names at the bucket of another.
- A new name in a full bucket takes the place of the row that says least: one
  a fresh row would say as well (no failure in an open window, or a lock past
  unlock_after) first, then the least recently seen row with failures but no
  lock. A live lock is never dropped before it would have expired.
- A bucket full of live locks has one shared row more: every name that finds
  no place counts there, together. Conservative: those names lock sooner, never
  later, and none forgets a lock.

Both tables follow it: `MemoryNames` (this process) and the SQLite file every
PAM process shares (store/unknown_names.py).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import NamedTuple, Protocol

SIZE = 4096     # names held at most (a table's default)
SLOTS = 16      # names per bucket

# A row's weight: what dropping it would forget.
FRESH, COUNTING, LOCKED = 0, 1, 2
Weigh = Callable[["CounterRow"], int]


class CounterRow(NamedTuple):
    """One unknown name's counter: the store's columns of the lockout rule."""

    failed_count: int = 0
    fail_window_start: float | None = None
    locked_at: float | None = None


class NameRows(Protocol):
    """The rows of one transaction of a `NameTable`."""

    def get(self, name: str) -> CounterRow | None:
        """The name's row; for a name that found no place, its bucket's shared row."""

    def put(self, name: str, row: CounterRow) -> None:
        """Store the row and make `name` the most recently seen (in a full bucket,
        in place of the lightest row, or in the shared row: see the module doc)."""


class NameTable(Protocol):
    """This process's memory (MemoryNames) or a table every process of the host
    shares (store/unknown_names.py)."""

    def transaction(self, weigh: Weigh) -> AbstractContextManager[NameRows]:
        """Gets and puts that no other thread or process interleaves with; `weigh`
        tells which rows may go (FRESH, COUNTING) and which may not (LOCKED)."""


def new_key() -> bytes:
    return secrets.token_bytes(32)


def geometry(size: int) -> tuple[int, int]:
    """(buckets, slots) for at most `size` names."""
    slots = max(1, min(SLOTS, size))
    return max(1, size // slots), slots


def bucket_of(key: bytes, name: str, buckets: int) -> int:
    digest = hmac.new(key, name.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def lightest(weights: list[tuple[int, int, str]]) -> str | None:
    """The name to drop from a full bucket of (weight, seen, name): the lightest,
    then the least recently seen; None when every one is a live lock."""
    weight, _, name = min(weights)
    return name if weight < LOCKED else None


class MemoryNames:
    """In memory, one process: at most `size` names, in keyed buckets."""

    def __init__(self, size: int = SIZE, key: bytes | None = None) -> None:
        self.size = size
        self.buckets, self.slots = geometry(size)
        self.key = key or new_key()
        # bucket -> {name: (seen, row)}; bucket -> its shared row
        self._rows: dict[int, dict[str, tuple[int, CounterRow]]] = {}
        self._shared: dict[int, CounterRow] = {}
        self._seen = 0
        self._guard = threading.Lock()

    def __len__(self) -> int:
        return sum(len(b) for b in self._rows.values())

    def names(self) -> list[str]:
        """The names held, least recently seen first (tests)."""
        held = [(seen, name) for b in self._rows.values() for name, (seen, _) in b.items()]
        return [name for _, name in sorted(held)]

    @contextmanager
    def transaction(self, weigh: Weigh) -> Iterator[NameRows]:
        with self._guard:
            yield _MemoryRows(self, weigh)


class _MemoryRows:
    def __init__(self, table: MemoryNames, weigh: Weigh) -> None:
        self.t = table
        self.weigh = weigh

    def _bucket(self, name: str) -> tuple[int, dict[str, tuple[int, CounterRow]]]:
        b = bucket_of(self.t.key, name, self.t.buckets)
        shared = self.t._shared.get(b)
        if shared is not None and self.weigh(shared) == FRESH:
            del self.t._shared[b]  # says nothing a fresh row would not
        return b, self.t._rows.setdefault(b, {})

    def get(self, name: str) -> CounterRow | None:
        b, rows = self._bucket(name)
        held = rows.get(name)
        # A name not held starts from the shared row, if any: never from less.
        return held[1] if held is not None else self.t._shared.get(b)

    def put(self, name: str, row: CounterRow) -> None:
        b, rows = self._bucket(name)
        if name not in rows and len(rows) >= self.t.slots:
            victim = lightest([(self.weigh(r), seen, n) for n, (seen, r) in rows.items()])
            if victim is None:  # every one a live lock: none is forgotten
                self.t._shared[b] = row
                return
            del rows[victim]
        self.t._seen += 1
        rows.pop(name, None)
        rows[name] = (self.t._seen, row)
