"""`jctotp fleet rotate-key` (issue 22): every secret re-sealed under a new key while
20 logins run on two hosts; none fails, the other host takes the new key from the
database, and `--finish` drops the old one."""

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

from pam_jctotp.crypto import SecretBox, key_id, load_ring
from pam_jctotp.secret import Secret
from pam_jctotp.store.postgres import PostgresStore

pytestmark = pytest.mark.fleet

PASSWORD = "correct horse battery"
BYSTANDERS = 100   # enrolled users nobody logs in as: the rotation takes a while


def test_rotate_key_during_twenty_concurrent_logins(make_host, confdir, pg_uri):
    a = make_host("a", max_attempts=100)
    b = make_host("b", max_attempts=100)
    users = {f"u{i}": a.add_user(f"u{i}") for i in range(20)}
    old = load_ring(Path(a.config["secret_key_file"]))
    box = SecretBox(old)
    store = PostgresStore(pg_uri, create=False)
    try:
        for i in range(BYSTANDERS):
            store.add(f"by{i}", is_admin=False, password_hash=None, now=time.time())
            store.update(f"by{i}", totp_secret=box.seal(Secret("JBSWY3DPEHPK3PXP"), f"by{i}",
                                                        "totp"))
    finally:
        store.close()
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
    assert f"{BYSTANDERS + 20} secret(s) re-sealed" in out, out
    failed = {n: r for n, r in results.items() if r[2] != pd.PAM_SUCCESS}
    assert len(results) == 20 and not failed, failed
    during = [n for n, (s, e, _) in results.items() if s < rotation_end and e > rotation_start]
    print(f"rotation {rotation_end - rotation_start:.2f} s; {len(during)} of 20 logins "
          "overlapped it")
    assert len(during) >= 5

    new = load_ring(Path(a.config["secret_key_file"]))
    assert len(new.keys) == 2 and new.keys[1] == old.keys[0] and new.mac == old.mac
    store = PostgresStore(pg_uri, create=False)
    try:
        kids = {SecretBox(new).sealed_with(r.totp_secret) for r in store.list()}
    finally:
        store.close()
    assert kids == {key_id(new.keys[0])}                 # every secret: the new key
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
