"""The control socket's verbs: who may ask for what, and the verb tables.

Who asks comes from SO_PEERCRED (the uid the kernel reports), never from the
request: root gets the admin verbs, everyone else the self-service verbs for
their own account.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import NotFound, PermissionDenied, UsageError
from ..model import UserRecord
from . import provisioning
from . import verbs_admin as a
from . import verbs_policy as vp
from . import verbs_self as s
from .accounts import Accounts
from .steps import Conversation
from .verbs_portal import PORTAL_VERBS

log = logging.getLogger("jctotpd")

ADMIN_VERBS: dict[str, Callable[[Accounts, str, dict[str, Any]], Conversation]] = {
    "user.add": a.user_add, "user.list": a.user_list, "user.show": a.user_show,
    "user.set": a.user_set, "user.remove": a.user_remove,
    "user.resend-email": a.user_resend_email,
    "mfa.enable": a.mfa_enable, "mfa.reset": a.mfa_reset, "mfa.disable": a.mfa_disable,
    "unlock": a.unlock, "passwd.admin": a.admin_passwd, "audit": a.audit_read,
    "clock.set": a.clock_set, "doctor": a.doctor,
    "policy.show": vp.policy_show, "policy.set": vp.policy_set,   # issue 21
    "break-glass.admin": s.admin_break_glass,
}
SELF_VERBS: dict[str, Callable[[Accounts, UserRecord, dict[str, Any]], Conversation]] = {
    "status": s.self_status, "setup": s.self_setup, "reset": s.self_reset,
    "recovery-codes": s.self_recovery_codes, "passwd": s.self_passwd,
    "break-glass": s.self_break_glass,
}


def _caller(acc: Accounts, uid: int) -> UserRecord:
    name = acc.system.uid_to_name(uid)
    rec = provisioning.record(acc, name) if name else None
    if rec is None:
        raise NotFound(f"you (uid {uid}) are not in the jctotp directory; ask an admin")
    return rec


def handle(acc: Accounts, uid: int, request: dict[str, Any]) -> Conversation:
    """Check who asks and for what; returns the verb's conversation.

    The transport calls this in a worker thread: the caller's uid is looked
    up through NSS, which may block.
    """
    if request.get("v") != 1:
        raise UsageError("unsupported control protocol version; upgrade jctotp")
    verb = request.get("verb")
    args = request.get("args") or {}
    if not isinstance(verb, str) or not isinstance(args, dict):
        raise UsageError("malformed request")
    if verb in ADMIN_VERBS:
        if uid != 0:
            raise PermissionDenied(f"'{verb.replace('.', ' ')}' is an admin verb: run it as root")
        log.info("control: %s by root", verb)
        return ADMIN_VERBS[verb](acc, "root", args)
    if verb in PORTAL_VERBS:
        # Only jctotp-portal's own uid (or root): every other local user is refused,
        # so no one but the portal can try passwords here on anyone's behalf.
        if uid != 0 and acc.system.uid_to_name(uid) != acc.config.portal.user:
            raise PermissionDenied(f"'{verb}' is for jctotp-portal (user "
                                   f"{acc.config.portal.user!r}) only")
        return PORTAL_VERBS[verb](acc, args)
    if verb in SELF_VERBS:
        rec = _caller(acc, uid)
        log.info("control: %s by %s", verb, rec.name)
        return SELF_VERBS[verb](acc, rec, args)
    raise UsageError(f"unknown verb {verb!r}")
