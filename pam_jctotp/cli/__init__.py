"""The `jctotp` command: a client of the control socket (plus `doctor`, read-only checks).

It imports nothing of the core or the store: everything it knows comes over
the socket (tests/unit/test_layers.py checks it).
"""
