"""jctotpd's mails (issue 23): a queue, one sender thread, smtplib.

`send()` only queues, so a slow or dead SMTP server never delays a login or
a verb. A failed send is logged (one line per failure streak) and retried
with a growing pause; a mail still unsent after MAX_TRIES is dropped with a
log line. Templates are plain text with `$field`s (string.Template), shipped
in mail_templates/ and overridable one by one in `smtp.templates`
(/etc/jctotp/mail/NAME.txt); the first line is the Subject. Only the fields
core/notices.py gives are filled in: no secret, code or QR code.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from string import Template

from .config import SmtpConfig

log = logging.getLogger("jctotpd")

SHIPPED = os.path.join(os.path.dirname(__file__), "mail_templates")
TEMPLATES = ("mfa_enabled", "enrollment_reminder", "mfa_reset", "password_reset",
             "password_changed", "account_locked")
QUEUE_MAX = 1000
MAX_TRIES = 12
FIRST_PAUSE = 5.0      # seconds before the first retry; doubles up to MAX_PAUSE
MAX_PAUSE = 900.0
SMTP_TIMEOUT = 15.0


@dataclass
class Mail:
    template: str
    to: str
    fields: dict[str, object]
    tries: int = 0
    not_before: float = field(default=0.0)


def render(cfg: SmtpConfig, template: str, fields: dict[str, object]) -> tuple[str, str]:
    """(subject, body) of `template`: the admin's copy if there is one, else ours."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown mail template {template!r}")
    path = os.path.join(cfg.templates, template + ".txt")
    if not os.path.exists(path):
        path = os.path.join(SHIPPED, template + ".txt")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    head, _, body = text.partition("\n\n")
    subject = head.removeprefix("Subject:").strip() if head.startswith("Subject:") else template
    values = {k: str(v) for k, v in fields.items()}
    subject = " ".join(Template(subject).safe_substitute(values).split())  # one header line
    return subject, Template(body).safe_substitute(values)


class Mailer:
    """The daemon's Outbox (core/portal_state.py) when `smtp:` is configured."""

    enabled = True

    def __init__(self, cfg: SmtpConfig) -> None:
        self.cfg = cfg
        self._queue: deque[Mail] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="mail", daemon=True)
        self._thread.start()

    def send(self, template: str, to: str, **fields: object) -> None:
        with self._wake:
            if len(self._queue) >= QUEUE_MAX:
                dropped = self._queue.popleft()
                log.error("mail queue full: dropped the %s mail (SMTP at %s:%d unreachable?)",
                          dropped.template, self.cfg.host, self.cfg.port)
            self._queue.append(Mail(template, to, dict(fields)))
            self._wake.notify()

    def pending(self) -> int:
        with self._wake:
            return len(self._queue)

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(SMTP_TIMEOUT + 1)
        if self._queue:
            log.warning("stopping with %d mail(s) unsent", len(self._queue))

    def _next(self) -> Mail | None:
        with self._wake:
            while not self._stopping:
                now = time.monotonic()
                ready = [m for m in self._queue if m.not_before <= now]
                if ready:
                    self._queue.remove(ready[0])
                    return ready[0]
                wait = min((m.not_before for m in self._queue), default=now + 3600) - now
                self._wake.wait(max(0.05, wait))
            return None

    def _run(self) -> None:
        while (mail := self._next()) is not None:
            try:
                self._deliver(mail)
            except (OSError, smtplib.SMTPException, ValueError) as exc:
                self._failed(mail, exc)
            else:
                if self._failing:
                    log.info("mail: %s:%d accepts mail again", self.cfg.host, self.cfg.port)
                    self._failing = False

    def _failed(self, mail: Mail, exc: Exception) -> None:
        mail.tries += 1
        if not self._failing:  # one line per streak of failures, not one per mail
            log.error("mail: cannot send through %s:%d: %s; retrying", self.cfg.host,
                      self.cfg.port, exc)
            self._failing = True
        if mail.tries >= MAX_TRIES:
            log.error("mail: gave up on the %s mail after %d tries", mail.template, mail.tries)
            return
        mail.not_before = time.monotonic() + min(MAX_PAUSE, FIRST_PAUSE * 2 ** (mail.tries - 1))
        with self._wake:
            self._queue.append(mail)

    def _deliver(self, mail: Mail) -> None:
        subject, body = render(self.cfg, mail.template, mail.fields)
        msg = EmailMessage()
        msg["From"] = self.cfg.from_address
        msg["To"] = mail.to
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain=self.cfg.from_address.rpartition("@")[2])
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body)
        with smtplib.SMTP(self.cfg.host, self.cfg.port, timeout=SMTP_TIMEOUT) as smtp:
            if self.cfg.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.cfg.username and self.cfg.password_file:
                with open(self.cfg.password_file, encoding="utf-8") as fh:
                    smtp.login(self.cfg.username, fh.read().strip())
            smtp.send_message(msg)
        log.info("mail: %s sent to %s", mail.template, mail.to)
