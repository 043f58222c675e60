"""`jctotp fleet rotate-key` (issue 22): a new fleet key while 20 logins run on two
hosts; none fails, the other host takes the new key from the database, and
`--finish` drops the old one. The fleet database keeps the TOTP keys itself (its
code check, store/pg_codecheck.py): none is sealed with the fleet key, so the
rotation leaves them alone; the fleet key then seals only what hosts keep (the
break-glass copies) and keys the recovery-code hashes (kept in the ring)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pamdriver as pd
import pytest
from fleetlib import service
from testlib import REPO, code_at

from pam_jctotp.crypto import load_ring
from pam_jctotp.store.postgres import PostgresStore

pytestmark = pytest.mark.fleet

PASSWORD = "correct horse battery"


def test_rotate_key_during_twenty_concurrent_logins(make_host, confdir, pg_uri):
    a = make_host("a", max_attempts=100)
    b = make_host("b", max_attempts=100)
    users = {f"u{i}": a.add_user(f"u{i}") for i in range(20)}
    old = load_ring(Path(a.config["secret_key_file"]))
    ids_before = _key_ids(pg_uri)
    svcs = [service(confdir, a), service(confdir, b)]
    results: dict[str, tuple[float, float, int]] = {}

    def login(i: int, name: str) -> None:
        started = time.monotonic()
        r = pd.run(confdir, svcs[i % 2], name, [PASSWORD, code_at(users[name])])
        results[name] = (started, time.monotonic(), r.rc)

    rotation_start = time.monotonic()
    rotation = subprocess.Popen(
        [sys.executable, "-m", "pam_jctotp.cli", "--config", str(a.config_path), "fleet",
         "rotate-key"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    threads = []
    for i, name in enumerate(users):   # spread over the rotation
        threads.append(threading.Thread(target=login, args=(i, name)))
        threads[-1].start()
        time.sleep(0.1)
    out, err = rotation.communicate(timeout=120)
    rotation_end = time.monotonic()
    for t in threads:
        t.join(60)
    assert rotation.returncode == 0, err
    assert "keeps the TOTP keys itself" in out, out
    failed = {n: r for n, r in results.items() if r[2] != pd.PAM_SUCCESS}
    assert len(results) == 20 and not failed, failed
    during = [n for n, (s, e, _) in results.items() if s < rotation_end and e > rotation_start]
    print(f"rotation {rotation_end - rotation_start:.2f} s; {len(during)} of 20 logins "
          "overlapped it")
    assert during   # (the rotation itself is quick now: no key to re-seal)

    new = load_ring(Path(a.config["secret_key_file"]))
    assert len(new.keys) == 2 and new.keys[1] == old.keys[0] and new.mac == old.mac
    assert _key_ids(pg_uri) == ids_before   # the database's keys: not touched
    # B took the new key from the database, into its key file too
    b_ring = load_ring(Path(b.config["secret_key_file"]))
    assert b_ring.keys[0] == new.keys[0], b.log.read_text()
    assert "fleet key rotated" in b.log.read_text()
    for host in (a, b):
        host.set_clock(60)
    for i, (name, totp) in enumerate(list(users.items())[:4]):   # after it, both hosts
        assert pd.run(confdir, svcs[i % 2], name,
                      [PASSWORD, code_at(totp, 60)]).rc == pd.PAM_SUCCESS

    done = a.cli("fleet", "rotate-key", "--finish")
    assert done.returncode == 0, done.stderr
    assert "1 hand-off(s) deleted" in done.stdout, done.stdout
    assert load_ring(Path(a.config["secret_key_file"])).keys == [new.keys[0]]
    a.stop()
    a.start()            # the ring without the old key: the key check still matches
    a.set_clock(90)
    assert pd.run(confdir, svcs[0], "u0", [PASSWORD, code_at(users["u0"], 90)]).rc == \
        pd.PAM_SUCCESS


def _key_ids(uri: str) -> dict[str, bytes]:
    """Each user's key id (users.totp_secret since the in-database code check)."""
    store = PostgresStore(uri, create=False)
    try:
        return {r.name: r.totp_secret for r in store.list() if r.totp_secret is not None}
    finally:
        store.close()
