"""One exception hierarchy for the whole package.

Every message says what is wrong and, where it can, what to do next.
"""

from .model import ExitCode


class JctotpError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code: ExitCode = ExitCode.REFUSED


class ConfigError(JctotpError):
    """The configuration file is missing, unreadable or names a bad key/value."""

    exit_code = ExitCode.CONFIG

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]   # one line each (doctor lists them)


class ProtocolError(JctotpError):
    """A peer sent a frame that breaks the wire protocol."""


class StoreError(JctotpError):
    """The state database cannot be opened, migrated or written."""


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
