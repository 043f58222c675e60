"""`jctotp policy show` and `jctotp policy set KEY VALUE` (issue 21): admin verbs.

The policy itself (the fleet database's keys over this host's file) is jctotpd's
FleetPolicy (fleet/policy.py, `Accounts.fleet_policy`); these verbs only ask it,
and audit a change: `policy_set` with the admin, the key, and old -> new (policy
values are never secrets). Setting the value a key already has changes nothing
and audits nothing, as every admin verb.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import UsageError
from .accounts import Accounts
from .steps import Conversation, Result
from .verbargs import arg


def _source(acc: Accounts) -> Any:
    if acc.fleet_policy is None:
        raise UsageError("this jctotpd has no policy view (a PAM process?)")
    return acc.fleet_policy


def policy_show(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    shown = _source(acc).show()
    yield Result(data=shown, message="\n".join(shown["drift"]))


def policy_set(acc: Accounts, actor: str, args: dict[str, Any]) -> Conversation:
    key = arg(args, "key", str)
    unset = arg(args, "unset", bool, False)
    if not unset and "value" not in args:
        raise UsageError("missing argument 'value'")
    value = None if unset else args["value"]
    if not unset and value is None:
        raise UsageError(f"policy key {key!r}: no value (use `jctotp policy unset {key}`)")
    old, new = _source(acc).change(key, value, actor)
    if old == new:
        yield Result(message=f"{key}: no change (the fleet's value is already "
                     f"{json.dumps(new) if new is not None else 'unset'})",
                     data={"changed": False, "key": key, "value": new})
        return
    shown = {"key": key, "old": json.dumps(old) if old is not None else "unset",
             "new": json.dumps(new) if new is not None else "unset"}
    acc.audit("policy_set", None, actor=actor, **shown)
    where = ("every host's file applies again" if new is None else
             "every host of the fleet takes it within seconds")
    yield Result(message=f"{key}: {shown['old']} -> {shown['new']} ({where})",
                 data={"changed": True, "key": key, "old": old, "value": new})
