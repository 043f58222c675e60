"""The directory tier (issue 14) runs against one private slapd per session.

Fixtures (tests/servers/slapd.py): slapd_server (session), slapd (per test, up).
"""

from servers.slapd import slapd, slapd_server  # noqa: F401
