"""The daemon's resident memory (issue 15): what only enrollment or tests need
is not imported when jctotpd starts."""

from __future__ import annotations

import subprocess
import sys


def test_starting_the_daemon_imports_neither_segno_nor_pyotp():
    """segno (the QR code, 2.6 MB) loads with the first enrollment; pyotp (1.5 MB)
    is not needed at all: our TOTP is hmac.digest, our secrets come from `secrets`."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys, pam_jctotp.daemon; "
         "print(sorted(m for m in ('segno', 'pyotp') if m in sys.modules))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_a_qr_code_still_draws_after_the_lazy_import():
    from pam_jctotp.core.qr import terminal_qr
    assert len(terminal_qr("otpauth://totp/x?secret=ABC").splitlines()) > 10
