"""bench/ssh_login.py --classic: the pieces its verdicts rest on.

The "at least as costly as ours" line is computed from yescrypt's N and r per
cost: checked here against the real libxcrypt's own encoding of them in the
hash prefix. The classic PAM service must differ from ours only in the auth
stack, so that the comparison measures the two auth stacks and nothing else.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import ssh_login  # noqa: E402

ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def libxcrypt_prefix(cost: int) -> str:
    name = ctypes.util.find_library("crypt")
    if name is None:
        pytest.skip("no libcrypt")
    lib = ctypes.CDLL(name)
    gensalt = getattr(lib, "crypt_gensalt", None)
    if gensalt is None:
        pytest.skip("libcrypt without crypt_gensalt (not libxcrypt)")
    gensalt.restype = ctypes.c_char_p
    gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    setting = gensalt(b"$y$", cost, None, 0)
    if not setting:
        pytest.skip("libcrypt without yescrypt")
    return setting.decode()


@pytest.mark.parametrize("cost", range(1, 9))
def test_yescrypt_params_match_libxcrypt(cost: int) -> None:
    # "$y$" + flags + N + r: one itoa64 digit each at these costs (yescrypt's
    # encoding stores log2(N) - 1 and r - 1).
    params = libxcrypt_prefix(cost).split("$")[2]
    n = 1 << (ITOA64.index(params[1]) + 1)
    r = ITOA64.index(params[2]) + 1
    assert ssh_login.yescrypt_params(cost) == (n, r)


def test_debian_default_is_cheaper_than_owasp_argon2id_and_cost_6_is_not() -> None:
    argon2id = 19.0 * 2  # MiB x passes at m=19456 KiB, t=2
    mib5, passes5 = ssh_login.yescrypt_work(5)
    mib6, passes6 = ssh_login.yescrypt_work(6)
    assert (mib5, round(passes5, 2)) == (16.0, 1.33)
    assert mib5 * passes5 < argon2id <= mib6 * passes6
    assert mib6 >= 19.0


def test_classic_pam_differs_from_ours_only_in_auth() -> None:
    ours = [line for line in (REPO / "packaging/pam.d/sshd").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    classic = [line for line in ssh_login.classic_pam().splitlines()
               if line.strip() and not line.startswith("#")]
    assert "pam_jctotp.so" not in ssh_login.classic_pam()
    assert [line for line in classic if line.startswith("auth")] == ssh_login.CLASSIC_AUTH
    assert ([line for line in classic if not line.startswith("auth")]
            == [line for line in ours if not line.startswith("auth") and "pam_jctotp" not in line])
