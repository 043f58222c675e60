"""Users appear by themselves: a user the directory knows (LDAP) but the store
does not yet gets an MFA record when the directory sync sees them in a login
group (`follow`, directory_sync.py), or else the first time they log in (or ask
a self-service verb), so an admin never adds directory users one by one.

Group policy (`apply_groups`), the one place it is decided, however the record
was made (first login, `jctotp user add`, `jctotp fleet import`, another host)
and whenever membership changes later: it runs on every record a login or
self-service verb looks at, and after `user add`.
- members of `mfa_groups` (directory groups by cn or DN, NSS groups by name)
  must use MFA: a record with MFA off starts an enrollment period of
  `default_enrollment_days`;
- admins (`admin_groups`, or the admin flag) get no period: their next login
  enrolls, and a period already running ends;
- everyone else keeps MFA off (password only, or refused with
  `require_mfa_for_all`); `exempt_groups` are read at each login
  (policy.exemption), so joining or leaving them needs nothing stored.
The record exists before any factor is checked, so the very first wrong
password already counts toward the lock.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import StoreError, StoreUnavailable
from ..model import MfaState, UserRecord
from . import mfa_lifecycle, policy
from .accounts import Accounts

LEFT_TEXT = "Your account is no longer in the directory. Contact your administrator."


def record(acc: Accounts, name: str) -> UserRecord | None:
    """The user's record, with group policy applied; made now for a directory user
    seen for the first time."""
    rec = acc.get(name)
    if rec is None:
        if not acc.directory.provisions or not acc.directory.exists(name):
            return None
        rec = _make(acc, name, "first seen in the directory")
    return apply_groups(acc, rec, actor="login") if rec is not None else None


def _make(acc: Accounts, name: str, reason: str) -> UserRecord | None:
    """A record with MFA off (apply_groups then decides), unless one was made meanwhile."""
    try:
        acc.store.add(name, is_admin=False, password_hash=None, now=acc.now())
    except StoreError:
        rec = acc.get(name)   # a parallel first login (or another host's sync) made it first
        if rec is None:
            raise
        return rec
    acc.audit("user_provisioned", name, reason=reason)
    return acc.get(name)


def follow(acc: Accounts, members: Mapping[str, frozenset[str]]) -> None:
    """The directory sync (directory_sync.py): every member of the login groups
    (name -> their directory groups) has a record before their first login, with
    group policy applied, so one who joined `mfa_groups` since must now enroll."""
    for name, groups in sorted(members.items()):
        rec = acc.get(name) or _make(acc, name, "directory sync")
        if rec is not None:
            apply_groups(acc, rec, actor="directory sync", groups=groups)


def apply_groups(acc: Accounts, rec: UserRecord, actor: str,
                 groups: frozenset[str] | None = None) -> UserRecord:
    """Bring the record in line with `mfa_groups` and `admin_groups` (see the module's
    docstring); the record as it is now. Never relaxes: leaving a group changes nothing
    stored (an admin turns MFA off with `jctotp mfa disable`)."""
    cfg = acc.config
    if not cfg.mfa_groups and not cfg.admin_groups and not rec.is_admin:
        return rec
    # the lookup only when a group is configured (groups_if): a stored admin flag alone
    # needs none, and this runs at every login
    if groups is None:
        groups = acc.groups_if(cfg.mfa_groups + cfg.admin_groups, rec.name)
    admin = policy.is_admin(rec, groups, cfg)
    state = acc.state(rec)
    days = mfa_lifecycle.grace(admin, cfg.default_enrollment_days)
    try:
        if state is MfaState.OFF and groups & set(cfg.mfa_groups):
            changed, why = mfa_lifecycle.require(acc, rec.name, days), "member of mfa_groups"
        elif state is MfaState.PENDING and admin:
            changed, why = mfa_lifecycle.renew(acc, rec.name, None), "admin: no enrollment period"
        else:
            return rec
    except StoreUnavailable:
        # e.g. the break-glass copy during a database outage: it is read-only, and
        # its members must still get in; the policy is applied once the store writes.
        return rec
    if changed:
        acc.audit("mfa_enabled", rec.name, actor=actor, reason=why,
                  enrollment_days=days, enroll_now=admin or None)
    return acc.get(rec.name) or rec


def left_directory(acc: Accounts, rec: UserRecord) -> bool:
    """A record whose user the directory no longer knows (removed or renamed in
    LDAP): refused in acct_mgmt, so an SSH key and a code do not outlive it."""
    return acc.directory.provisions and not acc.directory.exists(rec.name)
