"""The one home of a user's MFA lifecycle: which fields each change writes.

    require(acc, name, days)     MFA required, an enrollment period of `days` (None: none,
                                 the next login enrolls); an enrolled key is kept
    renew(acc, name, days)       a new period (an expired one, or an admin's ending now)
    reset(acc, name, days)       secrets and recovery codes gone, a new period
    disable(acc, name)           MFA off: secrets, codes and period gone
    activate(acc, name, ...)     a confirmed key becomes the TOTP secret, with recovery codes
    grace(admin, days)           the period a user gets: admins none (JumpCloud: an admin
                                 is never without MFA for days), whatever the default

Admin verbs (verbs_admin.py), group policy (provisioning.py), enrollment and the
portal call these; none writes these columns itself. Auditing stays with the
callers: they know who acted and why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..model import UserRecord
from ..secret import Secret
from . import policy

if TYPE_CHECKING:  # accounts.py imports this module: no import cycle at run time
    from .accounts import Accounts

TOTP_PURPOSE = "totp"
PENDING_PURPOSE = "totp-pending"
ADMIN_NO_GRACE = ("{names}: admins get no enrollment period (their next login must "
                  "enroll); leave out --enrollment-days, or use --enroll-now")


class StaleKey(Exception):
    """The pending key changed (a password reset) while its enrollment was confirmed."""


def period(acc: Accounts, days: int | None) -> dict[str, Any]:
    """The columns of an enrollment period of `days` (None: enroll now)."""
    if days is None:
        return {"enroll_deadline": None, "enroll_now": 1}
    return {"enroll_deadline": acc.now() + days * policy.DAY, "enroll_now": 0}


def grace(admin: bool, days: int | None) -> int | None:
    """The period a user gets out of `days`: none for an admin."""
    return None if admin else days


def periods(acc: Accounts, records: list[UserRecord], days: int | None,
            explicit: bool) -> dict[str, int | None]:
    """Each user's period (`grace`); an explicit period asked for an admin is
    refused before anything changes (UsageError)."""
    given = {r.name: grace(acc.is_admin(r), days) for r in records}
    admins = [r.name for r in records if given[r.name] is None]
    if admins and explicit and days is not None:
        raise UsageError(ADMIN_NO_GRACE.format(names=", ".join(admins)))
    return given


def require(acc: Accounts, name: str, days: int | None) -> bool:
    """Require MFA with a period of `days`; the key, if any, is kept."""
    return acc.store.update(name, mfa_required=1, **period(acc, days))


def require_flag(acc: Accounts, name: str) -> bool:
    """Require MFA of an enrolled user (nothing else to change)."""
    return acc.store.update(name, mfa_required=1)


def renew(acc: Accounts, name: str, days: int | None) -> bool:
    """A new enrollment period."""
    return acc.store.update(name, **period(acc, days))


def reset(acc: Accounts, name: str, days: int | None) -> None:
    """Require MFA with a fresh period; drops every secret and recovery code."""
    with acc.store.unit_of_work():
        acc.store.update(name, mfa_required=1, totp_secret=None, pending_secret=None,
                         last_step=-1, enrolled_at=None, **period(acc, days))
        acc.store.clear_recovery_codes(name)


def disable(acc: Accounts, name: str) -> None:
    """MFA off: secrets, recovery codes and period gone."""
    with acc.store.unit_of_work():
        acc.store.update(name, mfa_required=0, totp_secret=None, pending_secret=None,
                         enroll_deadline=None, enrolled_at=None, enroll_now=0)
        acc.store.clear_recovery_codes(name)


def activate(acc: Accounts, name: str, secret: Secret, step: int | None,
             codes: list[str] | None = None, *, pending: bytes | None = None) -> list[str]:
    """Make `secret` the user's TOTP secret with `codes` (new ones if None) as
    recovery codes; returns them. With `pending`, only if the stored pending key
    is still that one (a password reset meanwhile discards it): else StaleKey."""
    codes = acc.recovery_codes() if codes is None else codes
    with acc.store.unit_of_work():
        if pending is not None:
            rec = acc.get(name)
            if rec is None or rec.pending_secret != pending:
                raise StaleKey(name)
        acc.store.update(name, totp_secret=acc.stored_key(name, secret),
                         pending_secret=None, last_step=step if step is not None else -1,
                         enrolled_at=acc.now(), enroll_now=0)
        acc.store.replace_recovery_codes(name, [acc.box.recovery_hash(name, c) for c in codes])
    acc.forget_pending(name)
    return codes
