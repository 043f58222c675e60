"""The control socket's client, for the CLI and the tests: it lives with the
sockets (transport/control_client.py: no module outside transport/ opens one)."""

from __future__ import annotations

from ..transport.control_client import Interact, Reply, request

__all__ = ["Interact", "Reply", "request"]
