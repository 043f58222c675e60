"""What each `jctotp` command asks the daemon: argv (parsed) -> (verb, body) for the
control socket. Passwords are read here (a prompt, or --password-stdin), never from argv."""

from __future__ import annotations

import argparse
import getpass
import re
import sys
import time
import warnings
from datetime import UTC, datetime
from typing import Any

from ..errors import JctotpError, UsageError
from ..model import ExitCode


class EndOfInput(JctotpError):
    """Ctrl-D, or stdin at its end (</dev/null), where an answer was needed."""

    exit_code = ExitCode.INTERRUPTED


def _ask(text: str, echo: bool, json_mode: bool = False) -> str:
    try:
        if echo and json_mode:  # input() would write the prompt into the JSON on stdout
            print(text, end="", file=sys.stderr, flush=True)
            return input()
        if echo:
            return input(text)
        with warnings.catch_warnings():  # no terminal: getpass reads stdin, warning about echo
            warnings.simplefilter("ignore", getpass.GetPassWarning)
            return getpass.getpass(text)
    except EOFError:
        raise EndOfInput(f"no answer to {text.strip()!r} (end of input): nothing was "
                         "changed") from None


def _since(value: str) -> float:
    """An age (30m, 2h, 7d), or an ISO 8601 date/time; without a zone, UTC."""
    m = re.fullmatch(r"(\d+)([smhd])", value)
    if m:
        return time.time() - int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--since {value!r}: use an age (30m, 2h, 7d) or an ISO 8601 date "
                         "or time, as audit prints it (2026-11-24, 2026-11-27T02:18:00Z, "
                         "2026-11-27T03:18:00+01:00); without a zone it is UTC") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _read_password(args: argparse.Namespace, prompt: str = "New password: ") -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line.strip():
            raise UsageError("--password-stdin: no password on standard input")
        return line.rstrip("\n")
    first = _ask(prompt, False)
    if first != _ask("Again: ", False):
        raise UsageError("the two passwords differ")
    return first


def _period(args: argparse.Namespace, body: dict[str, Any]) -> dict[str, Any]:
    if args.enrollment_days is not None:
        body["enrollment_days"] = args.enrollment_days
    if args.enroll_now:
        body["enroll_now"] = True
    return body


def _user_add(args: argparse.Namespace) -> dict[str, Any]:
    password = None if args.no_password else _read_password(args)
    body = {"name": args.name, "admin": args.admin, "password": password, "mfa": args.mfa}
    if args.no_system_account:
        body["system_account"] = False
    if args.exist_ok:
        body["exist_ok"] = True
    return body


def _user_set(args: argparse.Namespace) -> dict[str, Any]:
    body = {"name": args.name}
    if args.max_attempts is not None:
        if args.max_attempts == "default":
            body["max_attempts"] = None
        elif re.fullmatch(r"\d{1,3}", args.max_attempts):
            body["max_attempts"] = int(args.max_attempts)
        else:
            raise UsageError("--max-attempts takes a number (1-100) or 'default'")
    if args.admin is not None:
        body["admin"] = args.admin
    if args.email is not None:
        body["email"] = args.email
    return body


def _user_request(args: argparse.Namespace, sub: str | None) -> tuple[str, dict[str, Any]]:
    if sub == "add":
        return "user.add", _user_add(args)
    if sub == "list":
        return "user.list", {}
    if sub == "set":
        return "user.set", _user_set(args)
    return f"user.{sub}", {"name": args.name}


def _mfa_request(args: argparse.Namespace, sub: str | None) -> tuple[str, dict[str, Any]]:
    body = {"names": args.names}
    if sub != "disable":
        _period(args, body)
    if sub == "reset" and args.compromised:
        body["compromised"] = True
    return f"mfa.{sub}", body


def _audit_request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    body = {"user": args.user, "host": args.host, "limit": args.limit, "verify": args.verify}
    if args.since:
        body["since"] = _since(args.since)
    return "audit", body


def _policy_request(args: argparse.Namespace, sub: str | None) -> tuple[str, dict[str, Any]]:
    if sub == "set":
        return "policy.set", {"key": args.key, "value": _yaml_value(args.value)}
    if sub == "unset":
        return "policy.set", {"key": args.key, "unset": True}
    return "policy.show", {}


def build_request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    cmd, sub = args.cmd, getattr(args, "sub", None)
    if cmd == "user":
        return _user_request(args, sub)
    if cmd == "mfa":
        return _mfa_request(args, sub)
    if cmd == "unlock":
        return "unlock", _period(args, {"names": args.names})
    if cmd == "passwd":
        if args.name:
            return "passwd.admin", {"name": args.name, "password": _read_password(args)}
        return "passwd", {}
    if cmd == "break-glass":
        return ("break-glass.admin", {"name": args.name}) if args.name else ("break-glass", {})
    if cmd == "audit":
        return _audit_request(args)
    if cmd == "policy":
        return _policy_request(args, sub)
    return cmd, {}


def _yaml_value(text: str) -> Any:
    """VALUE as YAML reads it (3, 2.5, true, [a, b], a string), as config.yaml would.
    No policy key takes a mapping: `{user}` (an account_name template, which YAML reads
    as one) is the text as typed, as is anything YAML cannot read."""
    import yaml
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    return text if isinstance(value, dict) else value
