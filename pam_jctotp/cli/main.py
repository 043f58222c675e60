"""jctotp: the command line for admins (as root) and users (self-service)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from .. import __version__
from .. import config as configmod
from ..errors import JctotpError
from ..model import ExitCode
from ..printable import printable
from .client import request
from .requests import _ask, build_request

EPILOG = """\
admin verbs (as root): user add|list|show|set|resend-email|remove, mfa enable|reset|disable,
  unlock, passwd NAME, break-glass NAME, audit, doctor, policy show|set|unset
self-service (as yourself): status, setup, reset, recovery-codes, passwd, break-glass

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
    for weakening in (uset, rm):
        _owner_flag(weakening)

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
        if action != "enable":
            _owner_flag(sp)

    ul = json_flag(sub.add_parser("unlock", help="unlock accounts (admin); an expired "
                                  "enrollment gets a new period"))
    ul.add_argument("names", nargs="+", metavar="NAME")
    _period_flags(ul)
    _owner_flag(ul)
    pw = json_flag(sub.add_parser("passwd", help="change your password, or NAME's as root"))
    pw.add_argument("name", nargs="?")
    pw.add_argument("--password-stdin", action="store_true")
    bg = json_flag(sub.add_parser("break-glass", help="keep a verifier of your directory "
                                  "password on this host, for logins while the directory is "
                                  "down (break_glass_group; NAME's as root)"))
    bg.add_argument("name", nargs="?")
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


def _owner_flag(sp: argparse.ArgumentParser) -> None:
    """The admin verbs that weaken a user, which `host_admin_verbs: false` leaves to the
    schema's owner: run here as the owner (pam_jctotp/fleet/owner.py), not by jctotpd."""
    sp.add_argument("--admin-database", metavar="URI", help="run it here as the fleet "
                    "schema's owner (password from libpq's passfile), not through jctotpd")


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
    if getattr(args, "admin_database", None):
        # as the owner, in a program of its own: this client never imports the store
        os.execv(sys.executable, [sys.executable, "-m", "pam_jctotp.fleet.owner",
                                  *(sys.argv[1:] if argv is None else argv)])
    return guarded(args, _run)


def guarded(args: argparse.Namespace, run: Callable[[argparse.Namespace], int]) -> int:
    """run(args) with the CLI's promise: a message and an exit code, never a traceback
    (the daemon path here, and fleet/owner.py's in-process owner path)."""
    if not hasattr(args, "json"):
        args.json = False
    try:
        return run(args)
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
    verb, body = build_request(args)
    result = request(cfg.control_socket, verb, body, Interaction(args.json), timeout=None)
    if result.exit != ExitCode.OK:
        return _fail(args, result.message, result.exit)
    _print(args, verb, result.data, result.message)
    sys.stdout.flush()  # a closed pipe shows up here, inside main's handlers
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
