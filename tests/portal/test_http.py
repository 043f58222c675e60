"""jctotp-portal over HTTP against a real jctotpd (issue 23): the page security rules."""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import pyotp
from portallib import Browser
from testlib import code_at

from pam_jctotp.portal.sessions import COOKIE

PASSWORD = "correct horse battery"
HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


def wrong(totp: pyotp.TOTP) -> str:
    window = {code_at(totp, d) for d in (-30, 0, 30)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in window)


def test_sign_in_with_a_code_and_the_headers(stack):
    daemon, portal = stack()
    totp = daemon.add_user("alice")
    b = Browser(portal.url)
    first = b.get("/signin")
    cookie = first.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert "Domain" not in cookie
    home = b.sign_in("alice", PASSWORD, code_at(totp))
    assert home.status_code == 200 and 'id="user-name">alice<' in home.text
    assert 'id="mfa-state">active<' in home.text
    h = home.headers
    assert "script-src" not in h["Content-Security-Policy"]
    assert "default-src 'none'" in h["Content-Security-Policy"]
    assert h["X-Frame-Options"] == "DENY" and h["Cache-Control"] == "no-store"
    assert h["Referrer-Policy"] == "same-origin"
    assert h["Server"] == "jctotp-portal"
    assert "<script" not in home.text and "style=" not in home.text
    events = [e for e in daemon.audit_events() if e["event"] == "login_ok"]
    assert events[-1]["service"] == "portal" and events[-1]["rhost"] == "127.0.0.1"


def test_a_session_id_is_new_after_sign_in(stack):
    daemon, portal = stack()
    daemon.add_user("bob", mfa=False)
    b = Browser(portal.url)
    b.get("/signin")
    planted = b.cookie
    b.post("/signin", {"name": "bob", "password": PASSWORD})
    assert b.cookie != planted
    fixated = Browser(portal.url)
    fixated.cookie = planted
    assert "/signin" in fixated.get("/").url


def test_forms_need_the_csrf_token_and_our_origin(stack):
    daemon, portal = stack()
    daemon.add_user("bob", mfa=False)
    b = Browser(portal.url)
    b.get("/signin")
    creds = {"name": "bob", "password": PASSWORD}
    assert b.post("/signin", creds, csrf=None).status_code == 403
    assert b.post("/signin", creds, csrf="x" * 43).status_code == 403
    assert b.post("/signin", creds, origin="https://evil.example").status_code == 403
    assert b.post("/signin", creds, origin=None).status_code == 403
    # none of these reached jctotpd: no sign-in was attempted
    assert not [e for e in daemon.audit_events() if e["event"].startswith("login")]
    other = Browser(portal.url)
    other.get("/signin")
    assert b.post("/signin", creds, csrf=other.csrf).status_code == 403  # another session's
    assert b.post("/signin", creds).status_code == 200  # the real one works


def test_a_stolen_cookie_is_dead_after_sign_out(stack):
    daemon, portal = stack()
    daemon.add_user("bob", mfa=False)
    b = Browser(portal.url)
    b.sign_in("bob", PASSWORD)
    thief = Browser(portal.url)
    thief.cookie = b.cookie
    assert 'id="user-name">bob<' in thief.get("/").text  # a live cookie is the session
    b.get("/")
    b.post("/signout", {})
    after = thief.get("/")
    assert after.url.endswith("/signin") and "user-name" not in after.text
    assert thief.post("/recovery-codes", {}, csrf=b.csrf).status_code == 403


def test_factor_changes_need_a_fresh_code(stack):
    daemon, portal = stack()
    totp = daemon.add_user("alice")
    b = Browser(portal.url)
    b.sign_in("alice", PASSWORD, code_at(totp))
    before = daemon.user("alice")["recovery_codes_left"]
    daemon.set_clock(301)
    page = b.get("/recovery-codes")
    assert 'id="prove-code"' in page.text and 'id="make-codes"' not in page.text
    done = b.post("/recovery-codes", {})   # the button without a fresh code
    assert 'id="codes"' not in done.text and "current code" in done.text
    assert b.post("/password", {"password": PASSWORD, "new_password": "x" * 12,
                                "again": "x" * 12}).text.count("current code") == 1
    assert "/signin" not in b.get("/enroll?step=scan").url  # sent to prove first
    assert daemon.user("alice")["recovery_codes_left"] == before
    # a code now, and it works
    b.get("/recovery-codes")
    page = b.post("/prove", {"code": code_at(totp, 301), "next": "/recovery-codes"})
    assert 'id="make-codes"' in page.text
    codes = b.post("/recovery-codes", {})
    assert len(re.findall(r"<li><code>", codes.text)) == 10


def test_fifty_concurrent_guesses_evaluate_max_attempts(stack):
    daemon, portal = stack(max_attempts=5, portal={"signins_per_minute": 1000})
    totp = daemon.add_user("alice")
    guess = wrong(totp)
    results: list[int] = []

    def one() -> None:
        b = Browser(portal.url)
        b.get("/signin")
        resp = b.post("/signin", {"name": "alice", "password": PASSWORD})
        if "/code" in resp.url:
            resp = b.post("/code", {"code": guess})
        results.append(resp.status_code)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 50
    evaluated = [e for e in daemon.audit_events()
                 if e["event"] == "login_fail" and e.get("reason") == "wrong_code"]
    assert len(evaluated) == 5
    shown = daemon.user("alice")
    assert shown["locked"] and shown["failed_attempts"] == 5
    # and the lock is the one SSH sees
    assert daemon.request("user.show", name="alice").data["lock_reason"]


def test_per_address_rate_limit(stack):
    daemon, portal = stack(portal={"signins_per_minute": 3})
    b = Browser(portal.url)
    b.get("/signin")
    texts = [b.post("/signin", {"name": "nobody", "password": "wrong password"}).text
             for _ in range(4)]
    assert "wait a minute" not in texts[2] and "wait a minute" in texts[3]


def test_a_hostile_text_is_escaped_everywhere(stack):
    daemon, portal = stack(portal={"signins_per_minute": 1000})
    totp = daemon.add_user("alice")
    b = Browser(portal.url)
    b.get("/signin")
    pages = [b.post("/signin", {"name": HOSTILE, "password": HOSTILE}),
             b.get("/reset/" + HOSTILE), b.post("/forgot", {"login": HOSTILE}),
             b.post("/reset/" + HOSTILE, {"new_password": HOSTILE, "again": HOSTILE})]
    b.sign_in("alice", PASSWORD, code_at(totp))
    for path in ("/", "/reset-phone", "/recovery-codes", "/password", "/enroll",
                 "/enroll?step=scan", "/code"):
        pages.append(b.get(path))
    pages.append(b.post("/prove", {"code": HOSTILE, "next": HOSTILE}))
    pages.append(b.post("/password", {"password": HOSTILE, "code": HOSTILE,
                                      "new_password": HOSTILE, "again": HOSTILE}))
    assert any("&lt;script&gt;" in p.text for p in pages)
    for p in pages:
        assert "<script" not in p.text and "onerror=alert" not in p.text.replace(
            "onerror=alert(2)&gt;", ""), p.url


def test_enrollment_in_the_period_through_the_pages(stack):
    daemon, portal = stack()
    daemon.ok("user.add", name="carol", password=PASSWORD, system_account=False)
    daemon.ok("mfa.enable", names=["carol"], enrollment_days=7)
    b = Browser(portal.url)
    page = b.sign_in("carol", PASSWORD)
    assert 'id="have-app"' in page.text
    page = b.get("/enroll?step=scan")
    key = re.search(r'id="key">([A-Z2-7 ]+)<', page.text).group(1)
    qr = b.get("/qr.png")
    assert qr.headers["Content-Type"] == "image/png" and qr.content[:4] == b"\x89PNG"
    assert qr.headers["Cache-Control"] == "no-store"
    done = b.post("/enroll", {"code": pyotp.TOTP(key.replace(" ", "")).now()})
    assert len(re.findall(r"<li><code>", done.text)) == 10
    assert daemon.user("carol")["mfa"] == "active"


def test_ssh_and_portal_guesses_share_one_counter(stack, tmp_path):
    """Two wrong codes through the real PAM stack (the shim, as sshd would), then 50
    concurrent guesses on the portal: exactly max_attempts - 2 more are evaluated,
    and the lock they reach refuses the next PAM login."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pam"))
    import pamdriver as pd
    pd.build_shim()
    daemon, portal = stack(max_attempts=5, portal={"signins_per_minute": 1000})
    totp = daemon.add_user("alice")
    confdir = tmp_path / "pam.d"
    confdir.mkdir()
    svc = pd.service(confdir, daemon)
    guess = wrong(totp)
    for _ in range(2):
        assert pd.run(confdir, svc, "alice", [PASSWORD, guess]).rc == pd.PAM_AUTH_ERR

    def one() -> None:
        b = Browser(portal.url)
        b.get("/signin")
        if "/code" in b.post("/signin", {"name": "alice", "password": PASSWORD}).url:
            b.post("/code", {"code": guess})

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    fails = [e for e in daemon.audit_events()
             if e["event"] == "login_fail" and e.get("reason") == "wrong_code"]
    assert [e.get("service") for e in fails].count("portal") == 3
    assert daemon.user("alice")["locked"]
    r = pd.run(confdir, svc, "alice", [PASSWORD, code_at(totp)])
    assert r.rc == pd.PAM_MAXTRIES, r
