"""Which mails go out, and with what (issue 23): one table, fed by the audit events.

Every change worth a mail is audited already, from whatever path made it (SSH,
the CLI, the portal, an admin verb), so Accounts.audit hands each event here
and no flow has to remember to mail. Fields are the user's name, days, the
portal's address, the host: never a secret, a code or a QR code. The outbox
queues; a mail never blocks or fails a login or a verb.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model import MfaState
from . import policy

if TYPE_CHECKING:
    from .accounts import Accounts


def on_event(acc: Accounts, event: str, name: str | None, fields: dict[str, Any]) -> None:
    if name is None or not acc.outbox.enabled:
        return
    actor = fields.get("actor")
    if event == "mfa_enabled" and actor != name and not fields.get("reason"):
        # not with `user add --mfa`: the admin handed the key over themselves
        send(acc, name, "mfa_enabled")
    elif event == "mfa_reset" and actor != name:
        send(acc, name, "mfa_reset")
    elif event == "password_changed":
        send(acc, name, "password_changed")
    elif event == "locked":
        send(acc, name, "account_locked")


def enrollment_mail(acc: Accounts, name: str) -> bool:
    """`jctotp user resend-email`: the MFA-enabled mail again; False if not due."""
    rec = acc.get(name)
    if rec is None or not rec.email or acc.state(rec) not in (MfaState.PENDING,
                                                             MfaState.ENROLL_NOW):
        return False
    send(acc, name, "mfa_enabled")
    return True


def remind(acc: Accounts, since: float, now: float) -> int:
    """Reminders for the periods whose reminder time (`enrollment_reminder_days` before
    the deadline) fell in (since, now]: the housekeeping runs this every minute, so each
    period gets one, with nothing to remember."""
    days = acc.config.enrollment_reminder_days
    if days == 0 or not acc.outbox.enabled:
        return 0
    sent = 0
    for rec in acc.store.list():
        if rec.email and rec.enroll_deadline is not None and \
                policy.mfa_state(rec, now) is MfaState.PENDING and \
                since < rec.enroll_deadline - days * policy.DAY <= now:
            send(acc, rec.name, "enrollment_reminder")
            sent += 1
    return sent


def send(acc: Accounts, name: str, template: str, **extra: object) -> None:
    """Queue `template` to `name`'s address (if any), with the fields every mail may use."""
    rec = acc.get(name)
    if rec is None or not rec.email:
        return
    now = acc.now()
    state = acc.state(rec)
    fields: dict[str, object] = {
        "user": rec.name, "host": acc.config.host_name, "issuer": acc.config.issuer,
        "portal": acc.config.portal.public_url,
        "days": policy.days_left(rec.enroll_deadline, now) if state is MfaState.PENDING else 0,
    }
    fields.update(extra)
    acc.outbox.send(template, rec.email, **fields)
