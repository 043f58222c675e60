"""The rules and the conversations: sans-I/O.

Nothing here imports asyncio, socket, sqlite3, psycopg, ldap3 or subprocess
(tests/unit/test_layers.py checks it). The conversations see the state only
through the `Store` and `Directory` protocols; the transport drives them.
"""
