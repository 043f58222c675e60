"""jctotpd's mails through a real SMTP server on 127.0.0.1, and the links in them."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pyotp
import pytest
from portallib import Browser
from testlib import code_at

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pam"))
from test_pam_processes import at_once, raw_login, wait_serving  # noqa: E402

PASSWORD = "correct horse battery"


def smtp_keys(sink) -> dict:
    return {"smtp": {"host": "127.0.0.1", "port": sink.port, "from": "mfa@example.org"}}


def no_secret_in(body: str, *secrets: str) -> None:
    for s in secrets:
        assert s not in body
    assert "otpauth://" not in body and not re.search(r"\b[A-Z2-7]{16,}\b", body)
    assert not re.search(r"\b\d{6}\b", body)


def test_mfa_enabled_mail_has_the_portal_link_and_days(stack, smtp):
    daemon, portal = stack(**smtp_keys(smtp))
    daemon.ok("user.add", name="carol", password=PASSWORD, system_account=False)
    daemon.ok("user.set", name="carol", email="carol@example.org")
    daemon.ok("mfa.enable", names=["carol"], enrollment_days=5)
    msg = smtp.wait(1)[0]
    assert msg["To"] == "carol@example.org" and msg["From"] == "mfa@example.org"
    assert "MFA now enabled" in msg["Subject"]
    body = smtp.body(msg)
    assert portal.url in body and "5 day(s)" in body and "carol" in body
    no_secret_in(body)
    # resend-email, through the CLI
    done = daemon.cli("user", "resend-email", "carol")
    assert done.returncode == 0, done.stderr
    assert "MFA now enabled" in smtp.wait(2)[1]["Subject"]
    # the reset by an admin is mailed too
    daemon.ok("mfa.reset", names=["carol"], enrollment_days=3)
    assert "reset by an administrator" in smtp.wait(3)[2]["Subject"]


def test_resend_email_refuses_without_a_period(stack, smtp):
    daemon, _ = stack(**smtp_keys(smtp))
    daemon.add_user("alice")
    daemon.ok("user.set", name="alice", email="alice@example.org")
    done = daemon.cli("user", "resend-email", "alice")
    assert done.returncode == 1 and "not in an enrollment period" in done.stderr


def test_forgotten_password_from_the_mail_link(stack, smtp):
    daemon, portal = stack(**smtp_keys(smtp))
    totp = daemon.add_user("alice")
    daemon.ok("user.set", name="alice", email="alice@example.org")
    b = Browser(portal.url)
    b.get("/forgot")
    answer = b.post("/forgot", {"login": "alice@example.org"})
    other = b.post("/forgot", {"login": "nobody@example.org"})
    assert re.search(r'id="message">(.*?)<', answer.text).group(1) == \
        re.search(r'id="message">(.*?)<', other.text).group(1)
    msg = smtp.wait(1)[0]
    link = smtp.link(msg)
    assert link.startswith(portal.url + "/reset/")
    no_secret_in(smtp.body(msg), PASSWORD)
    path = link[len(portal.url):]
    page = b.get(path)
    assert page.status_code == 200 and 'id="code"' in page.text
    assert page.headers["Referrer-Policy"] == "same-origin"
    # a wrong code: refused, counted, the link still works
    bad = b.post(path, {"code": "000000" if code_at(totp) != "000000" else "111111",
                        "new_password": "a brand new one", "again": "a brand new one"})
    assert bad.status_code == 400 and daemon.user("alice")["failed_attempts"] == 1
    done = b.post(path, {"code": code_at(totp), "new_password": "a brand new one",
                         "again": "a brand new one"})
    assert done.status_code == 200 and "Password changed" in done.text
    # the link is used up
    assert b.get(path).status_code == 410
    again = b.post(path, {"code": code_at(totp, 30), "new_password": "yet another one",
                          "again": "yet another one"})
    assert again.status_code == 410
    # "password changed" was mailed; the new password signs in
    assert "password was changed" in smtp.wait(2)[1]["Subject"]
    daemon.set_clock(60)
    home = Browser(portal.url).sign_in("alice", "a brand new one", code_at(totp, 60))
    assert 'id="user-name">alice<' in home.text


def test_an_expired_reset_link(stack, smtp):
    daemon, portal = stack(**smtp_keys(smtp), password_reset_minutes=30)
    daemon.add_user("bob", mfa=False)
    daemon.ok("user.set", name="bob", email="bob@example.org")
    b = Browser(portal.url)
    b.get("/forgot")
    b.post("/forgot", {"login": "bob"})
    path = smtp.link(smtp.wait(1)[0])[len(portal.url):]
    assert b.get(path).status_code == 200
    daemon.set_clock(30 * 60 + 1)
    assert b.get(path).status_code == 410
    assert b.post(path, {"new_password": "a brand new one",
                         "again": "a brand new one"}).status_code == 410


def test_account_locked_mail(stack, smtp):
    daemon, portal = stack(**smtp_keys(smtp), max_attempts=2)
    daemon.add_user("bob", mfa=False)
    daemon.ok("user.set", name="bob", email="bob@example.org")
    b = Browser(portal.url)
    b.get("/signin")
    for _ in range(2):
        b.post("/signin", {"name": "bob", "password": "not the password"})
    msg = smtp.wait(1)[0]
    assert "locked" in msg["Subject"] and msg["To"] == "bob@example.org"


def lock_over_pam_processes(daemon, processes: int) -> list[str]:
    """Six users with an address, each locked by wrong codes sent six at once to the PAM
    socket (so that, with pam_processes: 2, both processes lock some); their names."""
    if processes > 1:
        wait_serving(daemon)
    names = [f"lock{n}" for n in range(6)]
    for name in names:
        totp = daemon.add_user(name)
        daemon.ok("user.set", name=name, email=f"{name}@example.org")
        valid = {code_at(totp, d) for d in (-30, 0, 30)}
        wrong = next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in valid)
        at_once(6, raw_login, daemon.pam_socket, name, wrong)
    assert all(daemon.user(n)["locked"] for n in names)
    return names


@pytest.mark.parametrize("processes", [1, 2])
def test_account_locked_mail_once_whichever_pam_process_locks(make_daemon, smtp, processes):
    """Locks made by logins on the PAM socket, served by jctotpd or (`pam_processes: 2`)
    by its child too: each locked user gets exactly one mail."""
    daemon = make_daemon(**smtp_keys(smtp), max_attempts=3, pam_processes=processes)
    names = lock_over_pam_processes(daemon, processes)
    smtp.wait(len(names))
    time.sleep(2)   # (a second mail of a lock would have come by now)
    sent = sorted(m["To"] for m in smtp.messages)
    assert sent == sorted(f"{n}@example.org" for n in names), sent
    assert all("locked" in m["Subject"] for m in smtp.messages)
    log = daemon.log.read_text()
    served_by = set(re.findall(r"jctotpd\[(\d+)\]: \w+ auth totp user=lock\d ", log))
    assert len(served_by) == processes, served_by
    assert log.count(": account_locked sent to lock") == len(names), log


@pytest.mark.parametrize("processes", [1, 2])
def test_lock_mails_unsent_at_a_stop_are_named_by_every_pam_process(make_daemon, smtp,
                                                                     processes):
    """The SMTP server is down while the locks happen, then jctotpd stops: each process
    that queued a mail (a child too) says how many it could not send, none silently."""
    port = smtp.port
    smtp.stop()
    daemon = make_daemon(smtp={"host": "127.0.0.1", "port": port, "from": "mfa@example.org"},
                         max_attempts=3, pam_processes=processes)
    names = lock_over_pam_processes(daemon, processes)
    daemon.stop()
    log = daemon.log.read_text()
    unsent = re.findall(r"jctotpd\[(\d+)\]: WARNING stopping with (\d+) mail\(s\) unsent",
                        log)
    assert sum(int(n) for _, n in unsent) == len(names), log
    tried = set(re.findall(r"jctotpd\[(\d+)\]: ERROR mail: cannot send through", log))
    assert {pid for pid, _ in unsent} == tried, log   # every process that had one


def test_a_dead_smtp_server_blocks_nothing_and_the_mail_comes_later(stack, smtp):
    port = smtp.port
    smtp.stop()
    daemon, portal = stack(smtp={"host": "127.0.0.1", "port": port, "from": "mfa@example.org"})
    daemon.add_user("bob", mfa=False)
    daemon.ok("user.set", name="bob", email="bob@example.org")
    started = time.monotonic()
    b = Browser(portal.url)
    b.get("/forgot")
    b.post("/forgot", {"login": "bob"})
    daemon.ok("user.show", name="bob")
    assert time.monotonic() - started < 2
    deadline = time.monotonic() + 10
    while "cannot send through" not in daemon.log.read_text():
        assert time.monotonic() < deadline, "the failed send was not logged"
        time.sleep(0.1)
    smtp.port = port
    smtp.start()
    msg = smtp.wait(1, timeout=30)[0]
    assert smtp.link(msg).startswith(portal.url + "/reset/")


def test_the_enrollment_key_is_never_mailed(stack, smtp):
    daemon, portal = stack(**smtp_keys(smtp))
    daemon.ok("user.add", name="carol", password=PASSWORD, system_account=False)
    daemon.ok("user.set", name="carol", email="carol@example.org")
    daemon.ok("mfa.enable", names=["carol"], enrollment_days=5)
    b = Browser(portal.url)
    b.sign_in("carol", PASSWORD)
    key = re.search(r'id="key">([A-Z2-7 ]+)<', b.get("/enroll?step=scan").text).group(1)
    b.post("/enroll", {"code": pyotp.TOTP(key.replace(" ", "")).now()})
    for msg in smtp.wait(1):
        body = smtp.body(msg)
        assert key not in body and key.replace(" ", "") not in body
