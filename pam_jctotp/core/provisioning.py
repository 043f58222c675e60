"""Users appear by themselves: a user the directory knows (LDAP) but the store
does not yet gets an MFA record the first time they log in (or ask a
self-service verb), so an admin never adds directory users one by one.

Policy from config: members of `mfa_groups` (directory groups by cn or DN,
NSS groups by name) must use MFA and start inside `default_enrollment_days`
(admins, as everywhere, with no period: their first login enrolls);
everyone else starts with MFA off (password only, or refused with
`require_mfa_for_all`). The record exists before any factor is checked, so
the very first wrong password already counts toward the lock.
"""

from __future__ import annotations

from ..errors import StoreError
from ..model import UserRecord
from .accounts import Accounts

LEFT_TEXT = "Your account is no longer in the directory. Contact your administrator."


def record(acc: Accounts, name: str) -> UserRecord | None:
    """The user's record; made now for a directory user seen for the first time."""
    rec = acc.get(name)
    if rec is not None or not acc.directory.provisions or not acc.directory.exists(name):
        return rec
    groups = acc.groups_of(name)
    mfa = bool(groups & set(acc.config.mfa_groups))
    # Admins get no enrollment period (as `mfa enable` gives them): they enroll now.
    admin = bool(groups & set(acc.config.admin_groups))
    days = None if admin else acc.config.default_enrollment_days
    try:
        with acc.store.unit_of_work():
            acc.store.add(name, is_admin=False, password_hash=None, now=acc.now())
            if mfa:
                acc.store.update(name, mfa_required=1, **acc.period(days))
    except StoreError:
        rec = acc.get(name)   # a parallel first login made it first
        if rec is None:
            raise
        return rec
    acc.audit("user_provisioned", name, reason="first seen in the directory",
              enrollment_days=days if mfa else None, enroll_now=(mfa and admin) or None)
    return acc.get(name)


def left_directory(acc: Accounts, rec: UserRecord) -> bool:
    """A record whose user the directory no longer knows (removed or renamed in
    LDAP): refused in acct_mgmt, so an SSH key and a code do not outlive it."""
    return acc.directory.provisions and not acc.directory.exists(rec.name)
