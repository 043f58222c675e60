"""Encryption at rest and the Secret type: pam_jctotp/crypto.py, secret.py."""

from __future__ import annotations

import os
import stat

import pytest

from pam_jctotp.crypto import KEY_BYTES, SecretBox, load_or_create_key
from pam_jctotp.errors import StoreError
from pam_jctotp.secret import Secret


@pytest.fixture
def key_path(tmp_path):
    return tmp_path / "secret.key"


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(os.urandom(KEY_BYTES))


def test_key_file_is_created_0600_and_reused(key_path):
    key = load_or_create_key(key_path)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert load_or_create_key(key_path) == key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_file_readable_by_others_is_refused(key_path, mode):
    load_or_create_key(key_path)
    os.chmod(key_path, mode)
    with pytest.raises(StoreError, match="chmod 600"):
        load_or_create_key(key_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_key_file_owned_by_someone_else_is_refused(key_path):
    load_or_create_key(key_path)
    os.chown(key_path, 65534, 65534)
    with pytest.raises(StoreError, match="not owned"):
        load_or_create_key(key_path)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_key_file_of_the_wrong_size_is_refused(key_path, size):
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"k" * size)
    os.close(fd)
    with pytest.raises(StoreError, match="corrupt"):
        load_or_create_key(key_path)


def test_seal_open_round_trip(box):
    secret = Secret("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
    blob = box.seal(secret, "alice", "totp")
    assert secret.reveal().encode() not in blob
    assert box.open(blob, "alice", "totp") == secret
    assert box.seal(secret, "alice", "totp") != blob  # a fresh nonce every time


@pytest.mark.parametrize("user, purpose", [("bob", "totp"), ("alice", "totp-pending"),
                                           ("alice\0totp", ""), ("", "totp")])
def test_a_ciphertext_is_bound_to_its_user_and_purpose(box, user, purpose):
    blob = box.seal(Secret("JBSWY3DPEHPK3PXP"), "alice", "totp")
    with pytest.raises(StoreError, match="does not decrypt"):
        box.open(blob, user, purpose)


@pytest.mark.parametrize("tamper", [
    lambda b: b[:-1] + bytes([b[-1] ^ 1]),   # the tag
    lambda b: bytes([b[0] ^ 1]) + b[1:],     # the nonce
    lambda b: b[:12],                        # no ciphertext at all
    lambda b: b"",
])
def test_tampered_or_truncated_ciphertext(box, tamper):
    blob = box.seal(Secret("JBSWY3DPEHPK3PXP"), "alice", "totp")
    with pytest.raises(StoreError):
        box.open(tamper(blob), "alice", "totp")


def test_another_key_cannot_open(box):
    blob = box.seal(Secret("JBSWY3DPEHPK3PXP"), "alice", "totp")
    with pytest.raises(StoreError, match="wrong key"):
        SecretBox(os.urandom(KEY_BYTES)).open(blob, "alice", "totp")


def test_recovery_hash_is_keyed_per_user_and_normalised(box):
    h = box.recovery_hash("alice", "abcd-efgh-jkmn")
    assert h == box.recovery_hash("alice", "ABCD EFGH JKMN")
    assert h == box.recovery_hash("alice", "abcdefghjkmn")
    assert h != box.recovery_hash("bob", "abcd-efgh-jkmn")
    assert h != SecretBox(os.urandom(KEY_BYTES)).recovery_hash("alice", "abcd-efgh-jkmn")


def test_secrets_never_print_themselves(box):
    value = "hunter2-very-secret"
    s = Secret(value)
    for shown in (repr(s), str(s), f"{s}", f"{s!r}", repr([s]), repr({"k": s}),
                  "%s" % s):  # noqa: UP031 - %-formatting is one of the ways tested
        assert value not in shown
        assert "Secret(***)" in shown
    assert value not in repr(box) and "***" in repr(box)


def test_secret_compares_in_constant_time_and_by_value():
    assert Secret("a").equals("a") and not Secret("a").equals("b")
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    assert not Secret("") and Secret("x")
    assert Secret("é").equals("é")


def test_a_key_ring_opens_old_and_new_secrets_and_keeps_the_recovery_mac(tmp_path):
    """rotate-key's ring (issue 22): the newest key seals, every key opens, the blob
    names its key, a key the box lacks is asked for once, recovery hashes stay."""
    from pam_jctotp.crypto import KeyRing, key_id, load_ring, write_ring
    old_key, new_key = os.urandom(KEY_BYTES), os.urandom(KEY_BYTES)
    old = SecretBox(old_key)
    legacy = old.seal(Secret("JBSWY3DPEHPK3PXP"), "alice", "totp")
    assert old.sealed_with(legacy) == key_id(old_key)
    headless = legacy[1 + 8:]    # a row sealed before key ids: nonce || ciphertext
    ring = KeyRing([new_key, old_key], old.ring.mac)
    path = tmp_path / "secret.key"
    write_ring(path, ring)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == new_key
    box = SecretBox(load_ring(path))
    assert box.open(legacy, "alice", "totp").reveal() == "JBSWY3DPEHPK3PXP"
    assert box.open(headless, "alice", "totp").reveal() == "JBSWY3DPEHPK3PXP"
    fresh = box.seal(Secret("JBSWY3DPEHPK3PXP"), "alice", "totp")
    assert box.sealed_with(fresh) == key_id(new_key)
    assert box.recovery_hash("alice", "abcd-efgh") == old.recovery_hash("alice", "abcd-efgh")
    asked: list[bytes] = []
    old.learn = lambda kid: asked.append(kid) or new_key
    assert old.open(fresh, "alice", "totp").reveal() == "JBSWY3DPEHPK3PXP"
    assert asked == [key_id(new_key)]
    assert old.sealed_with(old.seal(Secret("x"), "a", "totp")) == key_id(new_key)
    with pytest.raises(StoreError):
        SecretBox(os.urandom(KEY_BYTES)).open(fresh, "alice", "totp")
