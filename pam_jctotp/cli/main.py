"""jctotp: the command line for admins (as root) and users (self-service)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import time
import urllib.parse
import urllib.request
import warnings
from datetime import UTC, datetime
from typing import Any

from .. import __version__
from .. import config as configmod
from ..errors import JctotpError, UsageError
from ..model import ExitCode
from ..printable import printable
from .client import request

EPILOG = """\
admin verbs (as root): user add|list|show|set|resend-email|remove, mfa enable|reset|disable,
  unlock, passwd NAME, audit, doctor, policy show|set|unset
self-service (as yourself): status, setup, reset, recovery-codes, passwd

exit codes:
  0   done
  1   refused (wrong code or password, already enrolled, ...): nothing changed
  2   usage error (bad arguments, out-of-range values)
  3   no such user
  4   permission denied (admin verb as a non-root user)
  5   account locked
  69  the daemon cannot be reached
  78  configuration error
  130 interrupted (Ctrl-C, or end of input at a prompt): nothing changed

times: audit prints UTC (2026-11-27T02:18:00Z) and --since takes that form
back; a time without a zone is UTC too.
"""


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


class Interaction:
    """Shows the daemon's texts and asks its prompts. With --json stdout is
    reserved for the one JSON document: texts go to a terminal's stderr (a
    person enrolling still sees the QR code), or nowhere; errors and warnings
    always go to stderr."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode

    def __call__(self, kind: str, text: str, echo: bool) -> str | None:
        if kind == "prompt":
            return _ask(text, echo, self.json_mode)
        if self.json_mode:
            if kind == "error" or sys.stderr.isatty():
                print(text, file=sys.stderr, flush=True)
            return None
        print(text, file=sys.stderr if kind == "error" else sys.stdout, flush=True)
        return None


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


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    cells = [[h for _, h in columns]]
    for row in rows:
        cells.append([_cell(row.get(k)) for k, _ in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


USER_COLUMNS = [("name", "USER"), ("admin", "ADMIN"), ("mfa", "MFA"),
                ("days_left", "DAYS LEFT"), ("locked", "LOCKED"),
                ("attempts_left", "ATTEMPTS LEFT"), ("recovery_codes_left", "RECOVERY"),
                ("directory", "DIRECTORY")]


def _cell(value: Any) -> str:
    """A value for people: booleans as yes/no, control characters escaped
    (--json keeps true/false and the exact text)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return printable(str(value))


def _describe(user: dict[str, Any]) -> str:
    # `password` (where it is checked) says more than has_password, which --json keeps.
    return "\n".join(f"{k.replace('_', ' '):<22}{_cell(v)}" for k, v in user.items()
                     if not (k == "has_password" and "password" in user))


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jctotp", description="pam_jctotp: TOTP MFA for Linux "
                                "logins", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=configmod.DEFAULT_PATH)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--version", action="version", version=f"jctotp {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="VERB")

    def json_flag(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        return sp

    user = sub.add_parser("user", help="directory users (admin)")
    usub = user.add_subparsers(dest="sub", required=True, metavar="ACTION")
    add = json_flag(usub.add_parser("add", help="add a user"))
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="an admin account (at most 5 attempts)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument("--no-password", action="store_true",
                     help="no directory password (for factors=totp stacks)")
    add.add_argument("--mfa", action="store_true",
                     help="make a TOTP secret now and print its otpauth:// URI once")
    add.add_argument("--no-system-account", action="store_true",
                     help="do not create the Linux account")
    add.add_argument("--exist-ok", action="store_true",
                     help="an existing user with the same settings is no error (nothing changes)")
    json_flag(usub.add_parser("list", help="list users"))
    show = json_flag(usub.add_parser("show", help="one user's MFA, lock and attempt state"))
    show.add_argument("name")
    uset = json_flag(usub.add_parser("set", help="change a user's settings"))
    uset.add_argument("name")
    uset.add_argument("--max-attempts", help="N (1-100) or 'default'")
    uset.add_argument("--admin", dest="admin", action="store_true", default=None)
    uset.add_argument("--no-admin", dest="admin", action="store_false")
    uset.add_argument("--email", metavar="ADDR",
                      help="the user's e-mail address: mails (smtp:) and account_name's "
                      "{email} ('' removes it)")
    resend = json_flag(usub.add_parser("resend-email", help="send the MFA-enabled mail "
                                       "again (a user in their enrollment period)"))
    resend.add_argument("name")
    rm = json_flag(usub.add_parser("remove", help="remove from the directory"))
    rm.add_argument("name")

    mfa = sub.add_parser("mfa", help="require, reset or disable MFA (admin)")
    msub = mfa.add_subparsers(dest="sub", required=True, metavar="ACTION")
    for action, text in (("enable", "require MFA with an enrollment period"),
                         ("reset", "remove secrets and recovery codes; new enrollment period"),
                         ("disable", "MFA no longer required; secrets removed")):
        sp = json_flag(msub.add_parser(action, help=text))
        sp.add_argument("names", nargs="+", metavar="NAME")
        if action != "disable":
            _period_flags(sp)
        if action == "reset":
            sp.add_argument("--compromised", action="store_true",
                            help="the key may be known to someone else: no enrollment period, "
                            "audited as compromised")

    ul = json_flag(sub.add_parser("unlock", help="unlock accounts (admin); an expired "
                                  "enrollment gets a new period"))
    ul.add_argument("names", nargs="+", metavar="NAME")
    _period_flags(ul)
    pw = json_flag(sub.add_parser("passwd", help="change your password, or NAME's as root"))
    pw.add_argument("name", nargs="?")
    pw.add_argument("--password-stdin", action="store_true")
    au = json_flag(sub.add_parser("audit", help="read the audit log (admin)"))
    au.add_argument("--user")
    au.add_argument("--host", help="one host of the fleet (host_name)")
    au.add_argument("--since", help="age (30m, 2h, 7d) or ISO 8601 date/time as audit prints "
                    "it (2026-11-27T02:18:00Z); no zone means UTC")
    au.add_argument("--limit", type=int, default=10000)
    au.add_argument("--verify", action="store_true", help="recompute the fleet audit's "
                    "hash chains: name every edited or deleted row")
    st = json_flag(sub.add_parser("status", help="your MFA state, days left, recovery codes, "
                                  "lock"))
    st.add_argument("--metrics", action="store_true",
                    help="print the daemon's Prometheus metrics instead (metrics_listen "
                    "or metrics_textfile)")
    json_flag(sub.add_parser("setup", help="enroll your authenticator now"))
    json_flag(sub.add_parser("reset", help="move to a new phone: prove the old one, "
                             "confirm the new"))
    json_flag(sub.add_parser("recovery-codes", help="make new recovery codes (needs a "
                             "current code)"))
    doctor = sub.add_parser("doctor", help="check this host's setup (PAM stacks, sshd, "
                            "sockets, clock, config, directory)")
    doctor.add_argument("--user", help="also check that the directory finds this user")
    json_flag(doctor)
    sub.add_parser("fleet", help="the fleet database: init, import, host (as root; "
                   "jctotp fleet -h)")
    pol = sub.add_parser("policy", help="the fleet's policy: show, set KEY VALUE, unset KEY "
                         "(admin)")
    psub = pol.add_subparsers(dest="sub", required=True, metavar="ACTION")
    json_flag(psub.add_parser("show", help="each policy key: the fleet's value, this host's "
                              "file, what runs, drift; keys waiting for a reload or restart"))
    pset = json_flag(psub.add_parser("set", help="store KEY in the fleet database: every "
                                     "host takes it within seconds (a YAML value: 3, true, "
                                     "[a, b], or a,b for a list)"))
    pset.add_argument("key", metavar="KEY")
    pset.add_argument("value", metavar="VALUE")
    punset = json_flag(psub.add_parser("unset", help="remove KEY from the fleet database: "
                                       "every host's file applies again"))
    punset.add_argument("key", metavar="KEY")
    return p


def _period_flags(sp: argparse.ArgumentParser) -> None:
    period = sp.add_mutually_exclusive_group()
    period.add_argument("--enrollment-days", type=int, default=None, metavar="N",
                        help="1-365 (default: config default_enrollment_days; admins get none)")
    period.add_argument("--enroll-now", action="store_true",
                        help="no enrollment period: the next login must enroll")


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


def _request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
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
    if cmd == "audit":
        return _audit_request(args)
    if cmd == "policy":
        return _policy_request(args, sub)
    return cmd, {}


def _yaml_value(text: str) -> Any:
    """VALUE as YAML reads it (3, 2.5, true, [a, b], a string), as config.yaml would."""
    import yaml
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _json_data(data: Any, message: str) -> Any:
    if data is None:
        return {"message": message}
    if isinstance(data, dict) and "otpauth_uri" in data and "key" not in data:
        # The key by hand, as the text shows it: scripts need not parse the URI.
        query = urllib.parse.urlsplit(data["otpauth_uri"]).query
        data = {**data, "key": urllib.parse.parse_qs(query).get("secret", [""])[0]}
    return data


def _print(args: argparse.Namespace, verb: str, data: Any, message: str) -> None:
    if args.json:
        print(json.dumps(_json_data(data, message), indent=2))
        return
    if verb == "user.list":
        print(_table(data, USER_COLUMNS) if data else "No users.")
    elif verb in ("user.show", "status"):
        print(_describe(data))
    elif verb == "policy.show":
        print(_policy_table(data))
        return
    elif verb == "audit" and isinstance(data, list):   # (--verify: a report)
        for e in data:
            extra = " ".join(f"{k}={printable(str(v))}" for k, v in e.items()
                             if k not in ("time", "ts", "event", "user", "host"))
            print(f"{printable(str(e.get('time')))}  {printable(e.get('host') or '-'):<12} "
                  f"{printable(str(e.get('event'))):<20} "
                  f"{printable(e.get('user') or '-'):<12} {extra}")
    if message:
        print(message)


def _policy_table(shown: dict[str, Any]) -> str:
    def text(value: Any) -> str:
        return "-" if value is None else json.dumps(value)
    rows = [{**k, "running": text(k["running"]), "fleet": text(k["fleet"]),
             "file": text(k["file"]), "note": "DRIFT" if k["drift"] else
             ("ignored: " + k["invalid"]) if k["invalid"] else ""} for k in shown["keys"]]
    lines = [_table(rows, [("key", "KEY"), ("running", "RUNNING"), ("source", "FROM"),
                           ("fleet", "FLEET"), ("file", "THIS FILE"), ("note", "NOTE")])]
    if not shown["fleet"]:
        lines.append("One host (SQLite): the config file is the policy.")
    lines.extend(shown["drift"])
    for key, what in (("reload_needed", "systemctl reload jctotpd"),
                      ("restart_needed", "systemctl restart jctotpd")):
        if shown[key]:
            lines.append(f"changed in the file, waiting for `{what}`: {', '.join(shown[key])}")
    return "\n".join(lines)


def _doctor(args: argparse.Namespace, cfg: configmod.Config, problems: list[str]) -> int:
    from . import doctor
    findings = doctor.run(cfg, args.config, problems, user=args.user)
    if args.json:
        print(json.dumps([f.__dict__ for f in findings], indent=2))
    else:
        for f in findings:
            print(f"{f.level.upper() if f.level == 'fail' else f.level:<5} {f.what}")
    return ExitCode.REFUSED if any(f.level == "fail" for f in findings) else ExitCode.OK


def _fleet(argv: list[str]) -> None:
    """`jctotp [--config F] fleet ...` opens the database and the key itself (no daemon
    is needed, or there is none yet): a separate program, so this client never imports
    the store or the key. Returns only when argv is not a fleet command."""
    i = 0
    while i < len(argv) and argv[i].startswith("--"):
        i += 2 if argv[i] == "--config" else 1
    if i < len(argv) and argv[i] == "fleet":
        os.execv(sys.executable, [sys.executable, "-m", "pam_jctotp.fleet.admin",
                                  *argv[:i], *argv[i + 1:]])


def _config(args: argparse.Namespace) -> tuple[configmod.Config, list[str]]:
    """The CLI needs only the control socket's path: a broken file is a
    warning (doctor lists every problem), never a reason to stop."""
    cfg, problems = configmod.load_collect(args.config, daemon=False)
    if problems and args.cmd != "doctor":
        print(f"jctotp: warning: {args.config} has {len(problems)} problem(s) "
              f"(`jctotp doctor` or `jctotpd --check` lists them); using control socket "
              f"{cfg.control_socket}", file=sys.stderr)
    return cfg, problems


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if args.json:
        print(json.dumps({"error": message, "exit": int(code)}))
    print(f"jctotp: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    _fleet(sys.argv[1:] if argv is None else argv)
    args = _build_parser().parse_args(argv)
    if not hasattr(args, "json"):
        args.json = False
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("\nInterrupted: nothing was changed.", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): no traceback, no more output.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.REFUSED
    except JctotpError as exc:
        return _fail(args, str(exc), exc.exit_code)
    except Exception as exc:  # the promise: a message, never a traceback
        if os.environ.get("JCTOTP_DEBUG"):
            raise
        return _fail(args, f"internal error ({type(exc).__name__}: {exc}); run with "
                     "JCTOTP_DEBUG=1 for details and report it", ExitCode.REFUSED)


def _metrics(args: argparse.Namespace, cfg: configmod.Config) -> int:
    """The daemon's metrics, as a scraper sees them: live from metrics_listen (loopback),
    else the last textfile jctotpd wrote."""
    if cfg.metrics_listen:
        host, port = configmod.loopback_address(cfg.metrics_listen)
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                text = answer.read().decode()
        except OSError as exc:
            return _fail(args, f"metrics endpoint {url}: {exc}", ExitCode.UNAVAILABLE)
    elif cfg.metrics_textfile:
        try:
            with open(cfg.metrics_textfile, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            return _fail(args, f"metrics textfile: {exc}", ExitCode.UNAVAILABLE)
    else:
        return _fail(args, "metrics are off: set metrics_textfile or metrics_listen in "
                     "the config", ExitCode.CONFIG)
    sys.stdout.write(text)
    return ExitCode.OK


def _run(args: argparse.Namespace) -> int:
    cfg, problems = _config(args)
    if args.cmd == "doctor":
        return _doctor(args, cfg, problems)
    if args.cmd == "status" and args.metrics:
        return _metrics(args, cfg)
    verb, body = _request(args)
    result = request(cfg.control_socket, verb, body, Interaction(args.json), timeout=None)
    if result.exit != ExitCode.OK:
        return _fail(args, result.message, result.exit)
    _print(args, verb, result.data, result.message)
    sys.stdout.flush()  # a closed pipe shows up here, inside main's handlers
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
