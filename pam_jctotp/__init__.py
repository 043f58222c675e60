"""pam_jctotp: JumpCloud-style TOTP multi-factor authentication for Linux logins.

The C shim (native/) relays a PAM conversation to this package's daemon
(`jctotpd`), which owns every decision: directory password, TOTP, enrollment
periods, lockout, audit.
"""

__version__ = "0.1.0"
