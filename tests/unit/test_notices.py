"""Which mails go out (core/notices.py) and how they read (mail.py), sans SMTP."""

from __future__ import annotations

import pytest
from harness import Mails

from pam_jctotp.config import SmtpConfig
from pam_jctotp.core import notices
from pam_jctotp.core.policy import DAY
from pam_jctotp.mail import TEMPLATES, render


@pytest.fixture
def mails(world):
    world.acc.outbox = Mails()
    return world.acc.outbox


def test_events_that_mail(world, mails):
    world.add("carol", mfa="off")
    world.store.update("carol", email="carol@example.org")
    world.acc.audit("mfa_enabled", "carol", actor="root", enrollment_days=7)
    world.acc.audit("mfa_enabled", "carol", actor="root", reason="enrolled by admin")
    world.acc.audit("mfa_reset", "carol", actor="root")
    world.acc.audit("mfa_reset", "carol", actor="carol")   # the user's own: no mail
    world.acc.audit("locked", "carol", reason="5 failed attempts")
    world.acc.password_changed("carol", "carol")
    world.acc.audit("login_ok", "carol")
    assert [m[0] for m in mails.sent] == ["mfa_enabled", "mfa_reset", "account_locked",
                                          "password_changed"]
    assert all(m[1] == "carol@example.org" for m in mails.sent)


def test_no_address_no_mail(world, mails):
    world.add("bob", mfa="off")
    world.acc.audit("locked", "bob")
    assert mails.sent == []


def test_a_failing_outbox_never_fails_the_event(world):
    class Broken(Mails):
        def send(self, *a, **k):
            raise RuntimeError("boom")
    world.acc.outbox = Broken()
    world.add("bob", mfa="off")
    world.store.update("bob", email="bob@example.org")
    assert world.acc.audit("locked", "bob") is True


def test_one_reminder_per_period(world, mails):
    world.add("carol", mfa="pending", days=5)
    world.store.update("carol", email="carol@example.org")
    days = world.config.enrollment_reminder_days
    start = world.now()
    assert notices.remind(world.acc, start, start + 60) == 0
    deadline = world.store.get("carol").enroll_deadline
    due = deadline - days * DAY
    assert notices.remind(world.acc, due - 60, due) == 1
    assert notices.remind(world.acc, due, due + 60) == 0
    template, _, fields = mails.sent[0]
    assert template == "enrollment_reminder"


@pytest.mark.parametrize("template", TEMPLATES)
def test_templates_fill_every_field(tmp_path, template):
    cfg = SmtpConfig(templates=str(tmp_path))
    subject, body = render(cfg, template, {"user": "u", "host": "h", "issuer": "i",
                                           "portal": "https://p", "days": 3,
                                           "link": "https://p/reset/t", "minutes": 30})
    assert "$" not in subject + body and "\n" not in subject


def test_an_admins_template_wins(tmp_path):
    (tmp_path / "account_locked.txt").write_text("Subject: Locked, $user\n\nCall 555.\n")
    subject, body = render(SmtpConfig(templates=str(tmp_path)), "account_locked",
                           {"user": "bob"})
    assert subject == "Locked, bob" and body == "Call 555.\n"
