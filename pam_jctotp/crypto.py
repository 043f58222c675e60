"""Encryption at rest: the one module that touches the key file and AES-GCM.

TOTP secrets are stored as nonce || AES-256-GCM(secret), with the user name
and purpose as associated data so a ciphertext cannot be moved to another
user's row. The 32-byte key lives in `state_dir/secret.key`, mode 0600,
root-owned, created on first start.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import StoreError
from .secret import Secret

KEY_BYTES = 32
NONCE_BYTES = 12


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
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise StoreError(f"key file {path} is corrupt: expected {KEY_BYTES} bytes")
    return key


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
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        # A separate subkey keys the recovery-code hashes.
        self._mac_key = hmac.new(key, b"jctotp recovery-code v1", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "SecretBox(***)"

    def seal(self, secret: Secret, user: str, purpose: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        ad = f"{purpose}\0{user}".encode()
        return nonce + self._aead.encrypt(nonce, secret.reveal().encode(), ad)

    def open(self, blob: bytes, user: str, purpose: str) -> Secret:
        ad = f"{purpose}\0{user}".encode()
        try:
            plain = self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], ad)
        except (InvalidTag, ValueError):
            raise StoreError(f"stored {purpose} of {user!r} does not decrypt with this key "
                             "file (wrong key or tampered row)") from None
        return Secret(plain.decode())

    def recovery_hash(self, user: str, code: str) -> str:
        normalized = code.replace("-", "").replace(" ", "").lower()
        msg = f"{user}\0{normalized}".encode()
        return hmac.new(self._mac_key, msg, hashlib.sha256).hexdigest()
