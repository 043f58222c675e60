"""The account call after a vouched auth success needs no second connection
(issue 15): the shim against a scripted fake daemon, through the real libpam.

The daemon vouches with `VERDICT SUCCESS_ACCT_OK` (only to a HELLO with
`acct_hint=1`) when the account stage would pass too; the shim then answers
the same handle's pam_acct_mgmt itself, for the same user, within
JC_VOUCH_SECONDS (5 s). Everything else still asks the daemon.
"""

from __future__ import annotations

import itertools
import os
import shlex
import threading

import pytest
from fakedaemon import Conn, FakeDaemon
from pamdriver import PAM_AUTHINFO_UNAVAIL, PAM_SUCCESS, SHIM, run, write_service

pytestmark = pytest.mark.pam

SERVICE = "jcvouch"


def stack(confdir: str, sock: str, *, auth: list[str] | None = None,
          account: list[str] | None = None) -> None:
    mod = f"{SHIM} socket={sock}"
    write_service(confdir, SERVICE,
                  [f"auth {line}" for line in (auth or [f"required {mod}"])]
                  + [f"account {line}" for line in (account or [f"required {mod}"])])


def by_call(**verdicts: str):
    """A daemon script answering each call (HELLO call=) with its verdict."""
    def script(conn: Conn) -> None:
        conn.verdict(verdicts[conn.hello["call"]])
    return script


def test_auth_asks_for_the_hint_account_does_not(confdir: str) -> None:
    with FakeDaemon(by_call(auth="SUCCESS", acct="SUCCESS")) as d:
        stack(confdir, d.path)
        assert run(confdir, SERVICE, "alice", [], call="both").rc == PAM_SUCCESS
    assert [c.hello.get("acct_hint") for c in d.connections] == ["1", None]


def test_a_vouched_success_skips_the_account_connection(confdir: str) -> None:
    with FakeDaemon(by_call(auth="SUCCESS_ACCT_OK", acct="PERM_DENIED")) as d:
        stack(confdir, d.path)
        r = run(confdir, SERVICE, "alice", [], call="both")
    assert r.rc == PAM_SUCCESS, r
    assert [c.hello["call"] for c in d.connections] == ["auth"]


def test_a_plain_success_still_asks_the_account(confdir: str) -> None:
    """An exempt user's auth success says nothing about the account stage."""
    with FakeDaemon(by_call(auth="SUCCESS", acct="ACCT_EXPIRED")) as d:
        stack(confdir, d.path)
        r = run(confdir, SERVICE, "alice", [], call="both")
    assert r.name == "PAM_ACCT_EXPIRED", r
    assert [c.hello["call"] for c in d.connections] == ["auth", "acct"]


def test_an_account_call_alone_always_asks(confdir: str) -> None:
    """publickey logins run no auth: there is nothing to vouch for them."""
    with FakeDaemon(by_call(acct="PERM_DENIED")) as d:
        stack(confdir, d.path)
        r = run(confdir, SERVICE, "alice", [], call="acct")
    assert r.name == "PAM_PERM_DENIED", r
    assert len(d.connections) == 1


def test_a_later_auth_call_drops_the_vouch(confdir: str) -> None:
    """Two auth lines: the first vouches, the second (optional) fails; the
    account call must ask the daemon again."""
    order = itertools.count()
    lock = threading.Lock()

    def script(conn: Conn) -> None:
        with lock:
            n = next(order)
        conn.verdict(["SUCCESS_ACCT_OK", "AUTH_ERR", "PERM_DENIED"][n])

    with FakeDaemon(script) as d:
        mod = f"{SHIM} socket={d.path}"
        stack(confdir, d.path,
              auth=[f"optional {mod}", f"optional {mod}", "required pam_permit.so"])
        r = run(confdir, SERVICE, "alice", [], call="both")
    assert r.name == "PAM_PERM_DENIED", r
    assert [c.hello["call"] for c in d.connections] == ["auth", "auth", "acct"]


def test_the_vouch_lasts_five_seconds(confdir: str) -> None:
    """pam_exec sleeps past JC_VOUCH_SECONDS between the auth and our account line."""
    with FakeDaemon(by_call(auth="SUCCESS_ACCT_OK", acct="PERM_DENIED")) as d:
        stack(confdir, d.path, account=["required pam_exec.so quiet /bin/sleep 5.2",
                                        f"required {SHIM} socket={d.path}"])
        r = run(confdir, SERVICE, "alice", [], call="both")
    assert r.name == "PAM_PERM_DENIED", r
    assert [c.hello["call"] for c in d.connections] == ["auth", "acct"]


def test_no_vouch_when_the_daemon_is_gone_for_the_account(confdir: str) -> None:
    """Without a vouch the account call needs the daemon: it fails closed."""
    with FakeDaemon(by_call(auth="SUCCESS", acct="SUCCESS")) as d:
        stack(confdir, d.path, account=[f"required {SHIM} socket={d.path}.gone"])
        r = run(confdir, SERVICE, "alice", [], call="both")
    assert r.rc == PAM_AUTHINFO_UNAVAIL, r


# --- against the real daemon ---------------------------------------------------------

DAY = 86400


def real_stack(confdir: str, daemon, factors: str = "password,totp") -> None:
    mod = f"{SHIM} socket={daemon.pam_socket}"
    write_service(confdir, SERVICE, [f"auth required {mod} factors={factors}",
                                     f"account required {mod}"])


def account_calls(daemon, user: str) -> int:
    """The daemon logs every PAM call it answers: `acct <factors> user=NAME …`."""
    return sum(1 for line in daemon.log.read_text().splitlines()
               if " acct " in f" {line} " and f"user={user} " in line)


def test_a_code_login_opens_one_connection(daemon, confdir: str) -> None:
    from testlib import code_at
    totp = daemon.add_user("alice")
    real_stack(confdir, daemon, "totp")
    r = run(confdir, SERVICE, "alice", [code_at(totp)], call="both")
    assert r.rc == PAM_SUCCESS, r
    assert account_calls(daemon, "alice") == 0


def test_an_exempt_user_past_enrollment_is_still_refused_by_account(make_daemon,
                                                                   confdir: str) -> None:
    """The daemon does not vouch for an exemption: auth passes on the password,
    the account call asks and is refused (enrollment period over)."""
    daemon = make_daemon(exempt_sources=["192.0.2.0/24"])
    daemon.add_user("eve", mfa=False)
    daemon.ok("mfa.enable", names=["eve"], enrollment_days=1)
    daemon.set_clock(2 * DAY)
    real_stack(confdir, daemon)
    r = run(confdir, SERVICE, "eve", ["correct horse battery"], call="both",
            rhost="192.0.2.7")
    assert r.name == "PAM_ACCT_EXPIRED", r
    assert account_calls(daemon, "eve") == 1


LOCKER = """\
import sys, time
sys.path.insert(0, {here!r})
from pamdriver import run
started = time.monotonic()
run({confdir!r}, "jcvouchlock", "alice", ["wrong", "000000"], call="auth")
open({took!r}, "w").write(str(time.monotonic() - started))
"""


def test_a_lock_made_within_the_vouch_still_refuses_the_account(make_daemon, confdir: str,
                                                                tmp_path) -> None:
    """Issue 19: the daemon vouched (SUCCESS_ACCT_OK), then, between this handle's auth
    and its account call and well inside JC_VOUCH_SECONDS, another login's wrong
    password locks the account (max_attempts 1): the account stack refuses, because
    the lock's marker voids the vouch and the account call asks the daemon."""
    import sys
    from pathlib import Path

    from testlib import code_at
    daemon = make_daemon(max_attempts=1)
    totp = daemon.add_user("alice")
    lockdir = Path(daemon.config["state_dir"]) / "locked"
    mod = f"{SHIM} socket={daemon.pam_socket} lockdir={lockdir}"
    write_service(confdir, "jcvouchlock", [f"auth required {mod}"])
    took = tmp_path / "took"
    locker = tmp_path / "locker.py"
    locker.write_text(LOCKER.format(here=str(Path(__file__).parent), confdir=confdir,
                                    took=str(took)))
    # pam_exec gives its command the PAM environment only: a sanitizer run's preload
    # (scripts/test-asan.sh) is handed on by a wrapper, or the shim would not load there
    wrapper = tmp_path / "locker.sh"
    keep = {k: os.environ[k] for k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")
            if k in os.environ}
    wrapper.write_text("#!/bin/sh\n" + "".join(f"export {k}={shlex.quote(v)}\n"
                                               for k, v in keep.items())
                       + f"exec {shlex.quote(sys.executable)} {shlex.quote(str(locker))}\n")
    wrapper.chmod(0o755)
    write_service(confdir, SERVICE, [
        f"auth required {mod}",
        f"account required pam_exec.so quiet {wrapper}",
        f"account required {mod}"])
    r = run(confdir, SERVICE, "alice", ["correct horse battery", code_at(totp)], call="both")
    assert float(took.read_text()) < 4, "the lock came after the vouch ran out"
    assert (lockdir / "alice").exists()
    assert r.name == "PAM_PERM_DENIED", r          # the account check of a locked account
    assert account_calls(daemon, "alice") == 1     # asked: the vouch was void
