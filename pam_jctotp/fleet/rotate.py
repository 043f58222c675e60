"""`jctotp fleet rotate-key` (issue 22): every TOTP secret re-sealed under a new key,
with no login failing on any host meanwhile.

Every sealed secret names its key (crypto.py), and a key file can hold a ring:
the key that seals, and older ones that still open. The verb, run as root on a
host that holds the fleet's current key:

1. makes a new key and hands it to the running hosts through the database, sealed
   with the current key (jctotp_meta `key:<id>`): a daemon that meets a secret
   sealed with a key it lacks (or sees the fleet's key check move, at its next
   sync) opens the hand-off with the key it has, adds the new key to its ring and
   to its key file (KeyLearner); from then on it seals with it;
2. writes this host's key file as the ring [new, old...] (the recovery codes'
   MAC key kept: their hashes cannot be remade) and moves the fleet's key check;
3. re-seals each secret, one compare-and-set statement per secret (a login never
   waits on a lock; an enrollment in between wins, and is re-sealed on the next pass).

`--finish`, once every host has the new key (`jctotp doctor` on each: no key
check mismatch): re-seals what a host sealed with the old key before it learned the
new one, deletes the hand-off from the database, and drops the old keys from this
host's ring. A host that was down during the rotation gets the key file copied
(its daemon refuses to start on a key check mismatch, and says so).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from .. import config as configmod
from ..core.accounts import PENDING_PURPOSE, TOTP_PURPOSE
from ..crypto import KEY_BYTES, KeyRing, SecretBox, key_check, key_id, load_ring, write_ring
from ..errors import StoreError
from ..secret import Secret

log = logging.getLogger("jctotpd.keys")

HANDOFF = "key:"          # jctotp_meta key prefix: a newer key, sealed with an older one
PURPOSE = "fleet_key"     # the hand-off's associated data: (purpose, key id)
COLUMNS = (("totp_secret", TOTP_PURPOSE), ("pending_secret", PENDING_PURPOSE))
MISS_TTL = 30.0           # seconds a key id the database does not know is not asked again


def seal_handoff(box: SecretBox, key: bytes) -> str:
    kid = key_id(key).hex()
    return box.seal(Secret(key.hex()), kid, PURPOSE).hex()


def reseal_all(store: Any, box: SecretBox) -> tuple[int, int]:
    """Each secret not sealed with the box's sealing key, re-sealed (compare-and-set).
    Returns (re-sealed, left because they changed meanwhile). A store that keeps the
    TOTP keys itself (the fleet database since schema 6: store/pg_codecheck.py) holds
    no sealed secret: its records carry key ids, so there is nothing to re-seal, and
    the new key seals only what hosts keep (break-glass copies, at their next refresh)."""
    if getattr(store, "put_key", None) is not None:
        return 0, 0
    current = key_id(box.ring.keys[0])
    done = raced = 0
    for rec in store.list():
        for column, purpose in COLUMNS:
            blob = getattr(rec, column)
            if blob is None or box.sealed_with(blob) == current:
                continue
            fresh = box.seal(box.open(blob, rec.name, purpose), rec.name, purpose)
            if store.reseal(rec.name, column, blob, fresh):
                done += 1
            else:
                raced += 1
    return done, raced


def rotate_key(cfg: configmod.Config, finish: bool = False) -> str:
    from ..daemon import open_fleet  # (the daemon imports KeyLearner from here)
    store = open_fleet(cfg)
    try:
        ring = load_ring(cfg.key_path)
        store.verify_key(key_check(ring.keys[0]), str(cfg.key_path))
        if finish:
            return _finish(cfg, store, ring)
        old = SecretBox(ring)
        new_key = os.urandom(KEY_BYTES)
        store.set_meta(HANDOFF + key_id(new_key).hex(), seal_handoff(old, new_key))
        new_ring = KeyRing([new_key, *ring.keys], ring.mac)
        write_ring(cfg.key_path, new_ring)
        store.set_meta("key_check", key_check(new_key))
        box = SecretBox(new_ring)
        done, raced = reseal_all(store, box)
        while raced:   # changed meanwhile (an enrollment): read again
            more, raced = reseal_all(store, box)
            done += more
    finally:
        store.close()
    kept = ("the fleet database keeps the TOTP keys itself (none is sealed with this key); "
            if getattr(store, "put_key", None) is not None else f"{done} secret(s) re-sealed; ")
    return (f"New fleet key {key_id(new_key).hex()}: {kept}this "
            f"host's key file {cfg.key_path} now holds it (and the old key, to open what "
            "is not re-sealed yet).\n"
            "Running hosts take the new key from the fleet database (sealed there with the "
            "old key) at their next sync or login, and write it to their key files.\n"
            "When `jctotp doctor` on every host shows no key check mismatch: "
            "jctotp fleet rotate-key --finish (deletes the old key's hand-off and drops it "
            "from this host's key file). A host that was down: copy this key file to it "
            "(mode 0600), then start it.\n")


def _finish(cfg: configmod.Config, store: Any, ring: KeyRing) -> str:
    box = SecretBox(ring)
    done, raced = reseal_all(store, box)
    while raced:
        more, raced = reseal_all(store, box)
        done += more
    handoffs = store.meta_like(HANDOFF)
    for key in handoffs:
        store.set_meta(key, None)
    write_ring(cfg.key_path, KeyRing(ring.keys[:1], ring.mac))
    return (f"Key rotation finished: {done} secret(s) sealed with an older key re-sealed, "
            f"{len(handoffs)} hand-off(s) deleted from the database, {len(ring.keys) - 1} "
            f"old key(s) dropped from {cfg.key_path}. Other hosts' key files still hold "
            "the old key: copy this one to them to drop it there too.\n")


class KeyLearner:
    """The daemon's half: a key this host lacks, taken from the fleet's hand-off."""

    def __init__(self, store: Any, box: SecretBox, path: Any) -> None:
        self.store = store
        self.box = box
        self.path = path
        self._missed: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def __call__(self, kid: bytes) -> bytes | None:
        with self._lock:
            now = time.monotonic()
            if now - self._missed.get(kid, -MISS_TTL) < MISS_TTL:
                return None
            try:
                sealed = self.store.meta(HANDOFF + kid.hex())
                if sealed is None:
                    self._missed[kid] = now
                    return None
                key = bytes.fromhex(self.box.open(bytes.fromhex(sealed), kid.hex(),
                                                  PURPOSE).reveal())
            except (StoreError, ValueError) as exc:
                log.error("fleet key %s: cannot take it from the database: %s", kid.hex(), exc)
                self._missed[kid] = now
                return None
            if key_id(key) != kid:
                return None
            self.box.add_key(key)
            try:
                write_ring(self.path, self.box.ring)
            except OSError as exc:
                log.error("fleet key %s: cannot write %s: %s (it is used until a restart)",
                          kid.hex(), self.path, exc)
            log.warning("fleet key rotated: key %s taken from the fleet database and added "
                        "to %s; new secrets are sealed with it", kid.hex(), self.path)
            return key

    def sync(self, rows: Any = None) -> None:
        """At each fleet sync: the fleet's key check moved to a key we lack: take it."""
        check = self.store.meta("key_check")
        if check and check not in {key_check(k) for k in self.box.ring.keys}:
            self(bytes.fromhex(check[3:3 + 16]))

