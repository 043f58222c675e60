"""Which logins pam-io runs itself (transport/pam_server.serves_inline).

Inline is only for a login path that cannot wait on the network: a step of a
fleet database, an LDAP directory or an NSS group lookup (sssd) may take
seconds, and on pam-io it would hold every other login up to QUEUE_WAIT.
"""

from __future__ import annotations

import pytest

from pam_jctotp import config
from pam_jctotp.transport.pam_server import serves_inline


def test_the_default_install_serves_inline() -> None:
    assert serves_inline(config.parse({}))


@pytest.mark.parametrize("raw", [
    {"database": "postgresql://jctotp@db.example.org/jctotp"},
    {"exempt_groups": ["ops"]},
    {"admin_groups": ["wheel"]},
    {"directory": {"type": "ldap", "uri": ["ldaps://ldap.example.org"],
                   "base_dn": "ou=Users,o=example", "bind_dn": "uid=svc,o=example",
                   "bind_password_file": "/etc/jctotp/ldap-bind"}},
])
def test_anything_that_may_wait_on_the_network_goes_to_the_workers(raw) -> None:
    assert not serves_inline(config.parse(raw, daemon=False))
