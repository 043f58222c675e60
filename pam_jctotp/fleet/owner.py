"""`jctotp unlock|mfa reset|mfa disable|user remove|user set ... --admin-database URI`:
the admin verb run in this process as the schema's owner, not through jctotpd's control
socket (whose host role the fleet policy `host_admin_verbs: false` refuses the verbs that
weaken a user). cli/main.py execs this module (as `_fleet` does `jctotp fleet`), so the
client itself never imports the store or the key.

The same parser, the same request, the same dispatch (core/verbs.handle) and the same
output and exit codes as the daemon path; audited as this host (host_name).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..cli.main import Interaction, _build_parser, _config, _fail, _print, guarded
from ..cli.requests import build_request
from ..core import verbs
from ..core.steps import (
    Conversation,
    Error,
    Info,
    Prompt,
    Result,
    SetPassword,
    Verdict,
    VerifyPassword,
)
from ..daemon.build import build_admin
from ..errors import UsageError
from ..model import ExitCode
from ..transport.perform import perform

# The verbs that take --admin-database (cli/main.py adds the flag to exactly these).
OWNER_VERBS = ("unlock", "mfa.reset", "mfa.disable", "user.remove", "user.set")


class _Runner:
    """Runs a verb's steps here, as the control server does for the daemon path."""

    def __init__(self, interact: Interaction) -> None:
        self.interact = interact

    def prompt(self, ctx: None, step: Prompt) -> str:
        return self.interact("prompt", step.text, step.echo) or ""

    def show(self, ctx: None, step: Info | Error) -> None:
        self.interact("error" if isinstance(step, Error) else "info", step.text, False)

    def verify(self, ctx: None, step: VerifyPassword) -> Any:
        raise UsageError("this verb asks for a password: run it without --admin-database")

    def set_password(self, ctx: None, step: SetPassword) -> Any:
        raise UsageError("this verb sets a password: run it without --admin-database")

    def end(self, ctx: None, step: Verdict | Result) -> Result:
        assert isinstance(step, Result)
        return step


def run(conversation: Conversation, runner: _Runner) -> Result:
    answer: Any = None
    while True:
        step = conversation.send(answer)
        answer = perform(step, runner, None)
        if isinstance(step, Result):
            conversation.close()
            return step


def main(argv: list[str] | None = None) -> int:
    return guarded(_build_parser().parse_args(argv), _as_owner)


def _as_owner(args: argparse.Namespace) -> int:
    verb, body = build_request(args)
    if verb not in OWNER_VERBS:
        raise UsageError(f"--admin-database is not for '{verb.replace('.', ' ')}'")
    cfg, _ = _config(args)
    accounts, close = build_admin(cfg, args.admin_database)
    try:
        result = run(verbs.handle(accounts, os.geteuid(), {"v": 1, "verb": verb,
                                                           "args": body}),
                     _Runner(Interaction(args.json)))
    finally:
        close()
    if result.exit != ExitCode.OK:
        return _fail(args, result.message, result.exit)
    # the data as the control socket's JSON would carry it (tuples as lists, ...)
    _print(args, verb, json.loads(json.dumps(result.data)), result.message)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
