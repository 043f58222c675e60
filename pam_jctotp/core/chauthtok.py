"""`passwd` through PAM (the shim's pam_sm_chauthtok, issue 23).

Linux-PAM runs a password stack twice: PAM_PRELIM_CHECK, then
PAM_UPDATE_AUTHTOK, and the second pass acts on the FIRST pass's return codes
(the chain is frozen). So the preliminary call (`passwd_prelim`) must already
tell a managed user (SUCCESS) from one the daemon does not manage (IGNORE:
pam_unix's line changes theirs), and it asks nothing and uses nothing up.

The update call (`passwd`) is `jctotp passwd`'s conversation
(verbs_self.self_passwd, the one rule): the current password, then the code
when MFA is active (one lockout attempt for both, the code used up like a
login's), then the new password twice. Its Result becomes a verdict.
"""

from __future__ import annotations

from ..errors import JctotpError
from ..model import ExitCode, LoginRequest, UserRecord, VerdictCode
from . import provisioning, verbs_self
from .accounts import Accounts
from .steps import Conversation, Error, Info, Result, Verdict

V = VerdictCode
_VERDICTS = {ExitCode.OK: V.SUCCESS, ExitCode.LOCKED: V.MAXTRIES, ExitCode.REFUSED: V.AUTH_ERR}


def _managed(acc: Accounts, rec: UserRecord | None) -> bool:
    """Does the directory keep this user's password (else: not ours to change)?"""
    if rec is None:
        return False
    return acc.config.directory.is_ldap or rec.password_hash is not None


def conversation(acc: Accounts, req: LoginRequest) -> Conversation:
    rec = provisioning.record(acc, req.user)
    if not _managed(acc, rec):
        yield Verdict(V.IGNORE)
        return
    assert rec is not None
    if req.call == "passwd_prelim":
        yield Verdict(V.SUCCESS)
        return
    inner = verbs_self.self_passwd(acc, rec, {})
    value = None
    while True:
        try:
            step = inner.send(value)
        except JctotpError as exc:  # e.g. a new password too short: nothing was changed
            yield Error(str(exc))
            yield Verdict(V.PERM_DENIED)
            return
        if isinstance(step, Result):
            inner.close()
            if step.message:
                yield (Info if step.exit == ExitCode.OK else Error)(step.message)
            yield Verdict(_VERDICTS.get(step.exit, V.PERM_DENIED), delay=step.delay)
            return
        value = yield step
