"""Fixtures of the portal tier (shared with tests/browser through conftest_portal)."""

from conftest_portal import smtp, stack  # noqa: F401
