"""One exception hierarchy for the whole package.

Every message says what is wrong and, where it can, what to do next.
"""

from .model import ExitCode
from .printable import redact_dsn


class JctotpError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code: ExitCode = ExitCode.REFUSED


class ConfigError(JctotpError):
    """The configuration file is missing, unreadable or names a bad key/value."""

    exit_code = ExitCode.CONFIG

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        # A value is often quoted back: never a connection string's password
        # (--check, the daemon log, doctor all print these).
        message = redact_dsn(message)
        super().__init__(message)
        self.problems = [redact_dsn(p) for p in problems or [message]]  # one line each


class ProtocolError(JctotpError):
    """A peer sent a frame that breaks the wire protocol."""


class StoreError(JctotpError):
    """The state database cannot be opened, migrated or written."""


class StoreUnavailable(StoreError):
    """The (fleet) database does not answer: logins fail closed; the store has logged
    the outage once, so callers need not log each failed login again."""

    exit_code = ExitCode.UNAVAILABLE


class UsageError(JctotpError):
    """A request is malformed: bad arguments, out-of-range values."""

    exit_code = ExitCode.USAGE


class NotFound(UsageError):
    """A named user does not exist in the directory."""

    exit_code = ExitCode.NOT_FOUND


class PermissionDenied(JctotpError):
    """The caller may not do this (e.g. an admin verb from a non-root user)."""

    exit_code = ExitCode.PERMISSION


class DirectoryUnavailable(JctotpError):
    """The directory (LDAP) cannot be reached, or refuses the service bind: fail closed."""

    exit_code = ExitCode.UNAVAILABLE


class PasswordChangeRefused(JctotpError):
    """The directory will not change this password; the message says where to change it."""


class ServiceUnavailable(JctotpError):
    """The daemon cannot be reached."""

    exit_code = ExitCode.UNAVAILABLE
