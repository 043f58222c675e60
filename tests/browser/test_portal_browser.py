"""Every portal flow in headless chromium (issue 23): sign-in, enrollment from the QR
code, sign-out, sign-in with a code, a new phone, new recovery codes, a password
change, and a forgotten password from the mailed link. Screenshots of each page go
to $JCTOTP_PORTAL_SHOTS (CI keeps them), else to the test's temp dir."""

from __future__ import annotations

import io
import os
import re
import urllib.parse
from pathlib import Path

import pyotp
import pytest
from testlib import code_at

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a fresh passphrase"
RESET_PASSWORD = "the reset passphrase"


class Flow:
    def __init__(self, driver, portal, shots: Path) -> None:
        self.d, self.url, self.shots = driver, portal.url, shots
        self.n = 0

    def go(self, path: str) -> None:
        self.d.get(self.url + path)

    def fill(self, **fields: str) -> None:
        from selenium.webdriver.common.by import By
        for name, value in fields.items():
            box = self.d.find_element(By.ID, name)
            box.clear()
            box.send_keys(value)

    def click(self, element_id: str) -> None:
        """Click a submit button or link and wait for the next page to load."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait
        old = self.d.find_element(By.TAG_NAME, "html")
        self.d.find_element(By.ID, element_id).click()
        WebDriverWait(self.d, 20).until(ec.staleness_of(old))
        WebDriverWait(self.d, 20).until(
            lambda d: d.execute_script("return document.readyState") == "complete")

    def text(self, element_id: str) -> str:
        from selenium.webdriver.common.by import By
        return str(self.d.find_element(By.ID, element_id).text)

    def has(self, element_id: str) -> bool:
        from selenium.webdriver.common.by import By
        return bool(self.d.find_elements(By.ID, element_id))

    def shot(self, name: str) -> bytes:
        self.n += 1
        png = self.d.get_screenshot_as_png()
        (self.shots / f"{self.n:02d}-{name}.png").write_bytes(png)
        return bytes(png)

    def path(self) -> str:
        return urllib.parse.urlsplit(self.d.current_url).path


def qr_secret(png: bytes) -> str:
    """The otpauth secret of the QR code in a screenshot (zxing-cpp reads it)."""
    import zxingcpp
    from PIL import Image
    found = [b.text for b in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]
    uris = [t for t in found if t.startswith("otpauth://totp/")]
    assert len(uris) == 1, found
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uris[0]).query)
    return query["secret"][0]


def scan_and_confirm(f: Flow, daemon, offset: float, name: str) -> tuple[pyotp.TOTP, list[str]]:
    png = f.shot(name)
    shown = f.text("key")
    assert re.fullmatch(r"([A-Z2-7]{4} )+[A-Z2-7]{1,4}", shown), shown  # groups of four
    secret = qr_secret(png)
    assert secret == shown.replace(" ", "")  # the image and the text agree
    totp = pyotp.TOTP(secret)
    daemon.set_clock(offset)
    f.fill(code=code_at(totp, offset))
    f.click("submit")
    f.shot(name + "-recovery-codes")
    codes = [li.text for li in f.d.find_elements("css selector", "#codes li")]
    assert len(codes) == 10
    return totp, codes


@pytest.fixture
def shots(tmp_path) -> Path:
    where = Path(os.environ.get("JCTOTP_PORTAL_SHOTS") or tmp_path / "shots")
    where.mkdir(parents=True, exist_ok=True)
    return where


def test_every_flow_in_a_real_browser(stack, smtp, browser, shots):
    daemon, portal = stack(smtp={"host": "127.0.0.1", "port": smtp.port,
                                 "from": "mfa@example.org"})
    daemon.ok("user.add", name="carol", password=PASSWORD, system_account=False)
    daemon.ok("user.set", name="carol", email="carol@example.org")
    daemon.ok("mfa.enable", names=["carol"], enrollment_days=7)
    enabled = smtp.wait(1)[0]
    assert portal.url in smtp.body(enabled)
    f = Flow(browser, portal, shots)

    # sign-in with the password (enrollment period): the "I have the app" step
    f.go("/")
    assert f.path() == "/signin"
    f.fill(name="carol", password=PASSWORD)
    f.shot("sign-in")
    f.click("submit")
    assert f.path() == "/enroll" and f.has("have-app")
    f.shot("enroll-get-the-app")
    f.click("have-app")
    totp, codes = scan_and_confirm(f, daemon, 0, "enroll-scan")
    f.click("done")
    assert f.text("mfa-state") == "active" and f.text("codes-left") == "10"
    f.shot("account")
    assert daemon.user("carol")["mfa"] == "active"

    # sign out; sign in with password and code
    f.click("signout")
    assert f.path() == "/signin"
    f.go("/")
    assert f.path() == "/signin"   # the old session is gone
    f.fill(name="carol", password=PASSWORD)
    f.click("submit")
    assert f.path() == "/code"
    daemon.set_clock(30)
    f.fill(code=code_at(totp, 30))
    f.shot("code")
    f.click("submit")
    assert f.path() == "/" and f.text("user-name") == "carol"

    # a new phone: the code just typed is fresh; the old key works until confirmed
    f.go("/reset-phone")
    f.shot("new-phone")
    f.click("new-key")
    new_totp, _ = scan_and_confirm(f, daemon, 60, "new-phone-scan")
    assert new_totp.secret != totp.secret

    # new recovery codes, after proving the (new) authenticator again later
    daemon.set_clock(60 + 301)
    f.go("/recovery-codes")
    assert f.has("prove-code") and not f.has("make-codes")
    f.fill(**{"prove-code": code_at(new_totp, 361)})
    f.shot("recovery-codes-prove")
    f.click("prove")
    f.click("make-codes")
    f.shot("recovery-codes-new")
    fresh = [li.text for li in f.d.find_elements("css selector", "#codes li")]
    assert len(fresh) == 10 and not set(fresh) & set(codes)

    # change the password (a fresh code from the proof above)
    f.go("/password")
    f.fill(password=PASSWORD, new_password=NEW_PASSWORD, again=NEW_PASSWORD)
    f.shot("password")
    f.click("submit")
    assert "Password changed" in f.text("message")
    f.shot("password-changed")
    changed = smtp.wait(2)[1]
    assert "password was changed" in changed["Subject"]

    # forgotten password, from the mailed link: code first, then the new one
    f.click("signout")
    f.go("/signin")
    f.click("forgot")
    f.fill(login="carol@example.org")
    f.shot("forgot")
    f.click("submit")
    mail = smtp.wait(3)[2]
    link = smtp.link(mail)
    assert link.startswith(portal.url + "/reset/")
    f.d.get(link)
    daemon.set_clock(420)
    f.fill(code=code_at(new_totp, 420), new_password=RESET_PASSWORD, again=RESET_PASSWORD)
    f.shot("reset-from-link")
    f.click("submit")
    assert "Password changed" in f.text("message")
    f.d.get(link)
    assert "not valid" in f.text("message")   # used up
    f.shot("reset-link-used")

    # the reset password signs in
    f.go("/signin")
    f.fill(name="carol", password=RESET_PASSWORD)
    f.click("submit")
    daemon.set_clock(450)
    f.fill(code=code_at(new_totp, 450))
    f.click("submit")
    assert f.text("user-name") == "carol"
    assert len(list(shots.glob("*.png"))) >= 14
