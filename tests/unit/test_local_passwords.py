"""The local directory's argon2id passwords (pam_jctotp/directory/local.py)."""

from __future__ import annotations

import argon2

from pam_jctotp.config import PasswordHashParams
from pam_jctotp.directory.local import Passwords
from pam_jctotp.secret import Secret


def test_a_user_without_a_hash_is_verified_against_one_of_the_same_cost():
    """Unknown users and users with no password are checked against a stand-in hash
    (made without hashing at start): the same argon2id parameters, salt and digest
    lengths as a real one, so they take as long as a wrong password; none matches."""
    params = PasswordHashParams(memory_kib=19456 * 2, time_cost=3, parallelism=2)
    passwords = Passwords(params)
    real = passwords.hash(Secret("correct horse battery"))
    dummy = passwords._dummy
    assert argon2.extract_parameters(dummy) == argon2.extract_parameters(real)
    assert argon2.extract_parameters(dummy).memory_cost == 19456 * 2
    assert [len(part) for part in dummy.split("$")] == [len(part) for part in real.split("$")]
    assert dummy != Passwords(params)._dummy   # random, not a constant of the source
    for stored in (None, ""):
        assert not passwords.verify(stored, Secret("correct horse battery"))
    assert passwords.verify(real, Secret("correct horse battery"))
    assert not passwords.verify(real, Secret("wrong horse battery"))
