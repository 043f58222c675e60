"""Encryption at rest: the one module that touches the key file and AES-GCM.

TOTP secrets are stored as 0x01 || key id || nonce || AES-256-GCM(secret), with
the user name and purpose as associated data so a ciphertext cannot be moved to
another user's row (rows sealed before key ids: nonce || ciphertext, opened by
trying each key: GCM's tag tells a wrong one). The 32-byte key lives in
`state_dir/secret.key`, mode 0600, root-owned, created on first start.

`jctotp fleet rotate-key` (fleet/rotate.py) turns the file into a key ring: the
key that seals, the older ones that still open, and the recovery codes' MAC key
(their hashes cannot be recomputed, so it outlives the key it came from).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import StoreError
from .secret import Secret

KEY_BYTES = 32
NONCE_BYTES = 12
ID_BYTES = 8
SEALED_V1 = 1                         # first byte of a blob that names its key
RING = b"jctotp-keyring v1\n"         # first line of a key file made by rotate-key
MAC_INFO = b"jctotp recovery-code v1"


class KeyRing:
    """keys[0] seals; every key opens; `mac` keys the recovery-code hashes."""

    def __init__(self, keys: list[bytes], mac: bytes | None = None) -> None:
        if not keys or any(len(k) != KEY_BYTES for k in keys):
            raise StoreError("a key ring needs 32-byte keys")
        self.keys = list(keys)
        self.mac = mac if mac is not None else hmac.new(keys[-1], MAC_INFO,
                                                        hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"KeyRing({len(self.keys)} key(s))"

    @classmethod
    def parse(cls, data: bytes, path: Path) -> KeyRing:
        if not data.startswith(RING):
            if len(data) != KEY_BYTES:
                raise StoreError(f"key file {path} is corrupt: expected {KEY_BYTES} bytes")
            return cls([data])
        keys, mac = [], None
        try:
            for line in data[len(RING):].decode("ascii").splitlines():
                kind, value = line.split()
                if kind == "key":
                    keys.append(bytes.fromhex(value))
                elif kind == "mac":
                    mac = bytes.fromhex(value)
        except ValueError:
            raise StoreError(f"key file {path} is corrupt (a key ring line)") from None
        return cls(keys, mac)

    def dump(self) -> bytes:
        lines = [f"mac {self.mac.hex()}"] + [f"key {k.hex()}" for k in self.keys]
        return RING + ("\n".join(lines) + "\n").encode()


def key_id(key: bytes) -> bytes:
    return bytes.fromhex(key_check(key)[3:3 + 2 * ID_BYTES])


def write_ring(path: Path, ring: KeyRing) -> None:
    """Replace the key file at once (0600 from the start; fsync'd before the rename)."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, ring.dump())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create_key(path: Path) -> bytes:
    """Read the key file, creating it (O_EXCL, 0600) when it does not exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            os.write(fd, os.urandom(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
    st = os.stat(path)
    if st.st_mode & 0o077:
        raise StoreError(f"key file {path} is readable by group/others "
                         f"(mode {st.st_mode & 0o777:o}); run: chmod 600 {path}")
    if st.st_uid != os.geteuid():
        raise StoreError(f"key file {path} is not owned by uid {os.geteuid()}")
    return KeyRing.parse(path.read_bytes(), path).keys[0]


def load_ring(path: Path) -> KeyRing:
    """Every key of the key file (checked as load_or_create_key checks it)."""
    load_or_create_key(path)
    return KeyRing.parse(path.read_bytes(), path)


def key_check(key: bytes) -> str:
    """A value that identifies the key without revealing it: stored in the fleet
    database, so a host with another key file refuses to start instead of
    answering "wrong code" to every user."""
    return "v1:" + hmac.new(key, b"jctotp key check v1", hashlib.sha256).hexdigest()[:32]


def read_key(path: Path) -> bytes:
    """Read an existing key file (a fleet host never makes its own key)."""
    if not os.path.exists(path):
        raise StoreError(f"key file {path} does not exist: copy the fleet's key file from "
                         "the first host (`jctotp fleet init` printed how), mode 0600, root")
    return load_or_create_key(path)


class SecretBox:
    def __init__(self, key: bytes | KeyRing) -> None:
        ring = key if isinstance(key, KeyRing) else KeyRing([key])
        self._ring = ring
        self._aeads = {key_id(k): AESGCM(k) for k in ring.keys}
        self._sealing = key_id(ring.keys[0])
        # A separate subkey keys the recovery-code hashes.
        self._mac_key = ring.mac
        # the daemon's: a key id this box lacks -> that key (from the fleet), or None
        self.learn: Callable[[bytes], bytes | None] | None = None

    def __repr__(self) -> str:
        return "SecretBox(***)"

    @property
    def ring(self) -> KeyRing:
        return self._ring

    def add_key(self, key: bytes) -> None:
        """A newer key (rotation): it seals from now on; the others still open."""
        kid = key_id(key)
        if kid not in self._aeads:
            self._ring = KeyRing([key, *self._ring.keys], self._ring.mac)
            self._aeads[kid] = AESGCM(key)
        self._sealing = kid

    def seal(self, secret: Secret, user: str, purpose: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        ad = f"{purpose}\0{user}".encode()
        kid = self._sealing
        return (bytes([SEALED_V1]) + kid + nonce +
                self._aeads[kid].encrypt(nonce, secret.reveal().encode(), ad))

    def open(self, blob: bytes, user: str, purpose: str) -> Secret:
        ad = f"{purpose}\0{user}".encode()
        tries: list[tuple[AESGCM, bytes]] = []
        if blob[:1] == bytes([SEALED_V1]) and len(blob) > 1 + ID_BYTES + NONCE_BYTES:
            kid = blob[1:1 + ID_BYTES]
            aead = self._aeads.get(kid)
            if aead is None and self.learn is not None:
                key = self.learn(kid)   # sealed during a rotation: the fleet's newer key
                if key is not None and key_id(key) == kid:
                    self.add_key(key)
                    aead = self._aeads[kid]
            if aead is not None:
                tries.append((aead, blob[1 + ID_BYTES:]))
        tries += [(aead, blob) for aead in list(self._aeads.values())]   # before key ids
        for aead, body in tries:
            try:
                plain = aead.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], ad)
            except (InvalidTag, ValueError):
                continue
            return Secret(plain.decode())
        raise StoreError(f"stored {purpose} of {user!r} does not decrypt with this key "
                         "file (wrong key or tampered row)")

    def sealed_with(self, blob: bytes) -> bytes | None:
        """The id of the key that sealed `blob` (None: sealed before key ids)."""
        if blob[:1] == bytes([SEALED_V1]) and len(blob) > 1 + ID_BYTES + NONCE_BYTES:
            return blob[1:1 + ID_BYTES]
        return None

    def recovery_hash(self, user: str, code: str) -> str:
        normalized = code.replace("-", "").replace(" ", "").lower()
        msg = f"{user}\0{normalized}".encode()
        return hmac.new(self._mac_key, msg, hashlib.sha256).hexdigest()
