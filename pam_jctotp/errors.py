"""One exception hierarchy for the whole package.

Every message says what is wrong and, where it can, what to do next.
"""


class JctotpError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class ConfigError(JctotpError):
    """The configuration file is missing, unreadable or names a bad key/value."""

    exit_code = 78  # EX_CONFIG


class ProtocolError(JctotpError):
    """A peer sent a frame that breaks the wire protocol."""


class StoreError(JctotpError):
    """The state database cannot be opened, migrated or written."""


class UsageError(JctotpError):
    """A request is malformed: bad arguments, out-of-range values."""

    exit_code = 2


class NotFound(UsageError):
    """A named user does not exist in the directory."""

    exit_code = 3


class PermissionDenied(JctotpError):
    """The caller may not do this (e.g. an admin verb from a non-root user)."""

    exit_code = 4


class ServiceUnavailable(JctotpError):
    """The daemon cannot be reached."""

    exit_code = 69  # EX_UNAVAILABLE
