"""The `jctotp` command as scripts and people use it (issue 12 bugs 1, 2, 4, 6):
one JSON document on stdout for every verb, no traceback whatever happens,
a config typo is a warning, audit's own time format taken back by --since."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from testlib import REPO, code_at

pytestmark = pytest.mark.pam

PASSWORD = "correct horse battery"
NOBODY = 65534   # exists everywhere; our directory user "nobody" for self-service


def command(daemon, argv: tuple[str, ...], uid: int | None) -> list[str]:
    """`jctotp ARGV`, run by `uid` when given: imports done as root (the test
    venv's interpreter lives under /root), then setuid, then main()."""
    program = ("import os, sys, locale, gettext\nfrom pam_jctotp.cli import doctor\n"
               "from pam_jctotp.cli.main import main, _build_parser\n_build_parser()\n"
               "from pam_jctotp import config\nconfig.parse({})\n"
               + (f"os.setgroups([]); os.setgid({uid}); os.setuid({uid})\n"
                  if uid is not None else "")
               + "sys.exit(main(sys.argv[1:]))\n")
    config = daemon.config_path
    if uid is not None:  # pytest's tmp dirs are root's only: a copy the user can read
        config = Path(daemon.config["control_socket"]).parent / "config.yaml"
        shutil.copy(daemon.config_path, config)
        os.chmod(config, 0o644)
    return [sys.executable, "-c", program, "--config", str(config), *argv]


def cli_as(daemon, uid: int, *argv: str, input: str | None = None
           ) -> subprocess.CompletedProcess:
    """`jctotp` run by an unprivileged uid (self-service verbs)."""
    return subprocess.run(command(daemon, argv, uid), input=input, text=True,
                          capture_output=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


def one_document(out: subprocess.CompletedProcess):
    assert "Traceback" not in out.stderr, out.stderr
    return json.loads(out.stdout)  # the whole of stdout, nothing before or after


def test_json_of_every_verb_is_one_document(daemon):
    """Bug 1: `--json user add --mfa` printed the QR code, key and recovery
    codes before the JSON. Now every verb's stdout parses as one document."""
    os.chmod(daemon.config_path, 0o644)
    added = one_document(daemon.cli("--json", "user", "add", "erin", "--password-stdin",
                                    "--mfa", "--no-system-account", input=PASSWORD + "\n"))
    assert added["otpauth_uri"].startswith("otpauth://totp/") and len(added["key"]) == 32
    assert f"secret={added['key']}" in added["otpauth_uri"]
    assert len(added["recovery_codes"]) == 10
    daemon.add_user("nobody")
    runs = [
        ("user", "list"), ("user", "show", "erin"), ("user", "set", "erin", "--max-attempts",
                                                     "3"),
        ("mfa", "enable", "nobody"), ("mfa", "reset", "erin"), ("mfa", "disable", "erin"),
        ("unlock", "erin"), ("audit",), ("audit", "--since", "1h"), ("doctor",),
        ("user", "show", "ghost"),       # an error is a document too
        ("status",),                     # root is not a directory user: an error
    ]
    for i, argv in enumerate(runs):
        for form in (("--json", *argv), (*argv, "--json"))[:2 if i < 2 else 1]:
            out = daemon.cli(*form)
            doc = one_document(out)
            if out.returncode not in (0, 1):  # doctor may fail on this host: still JSON
                assert doc["exit"] == out.returncode and doc["error"], (form, doc)
    one_document(daemon.cli("passwd", "erin", "--password-stdin", "--json",
                            input="another long password\n"))
    one_document(daemon.cli("user", "remove", "erin", "--json"))
    # Self-service, as the user (prompts go to stderr; no answer is an error document).
    status = cli_as(daemon, NOBODY, "status", "--json")
    assert status.returncode == 0 and isinstance(one_document(status), dict), status
    for verb in ("setup", "reset", "recovery-codes", "passwd"):
        out = cli_as(daemon, NOBODY, verb, "--json", input="")
        doc = one_document(out)
        assert out.returncode != 0 and doc["error"], (verb, out)


def test_recovery_codes_json_with_a_prompt_answered(daemon):
    totp = daemon.add_user("nobody")
    # The code, then Enter at "Press Enter when you have stored them" (issue 9 item 13).
    out = cli_as(daemon, NOBODY, "--json", "recovery-codes", input=code_at(totp) + "\n\n")
    assert out.returncode == 0, out.stderr
    doc = one_document(out)
    assert doc  # the prompts went to stderr; stdout is only the document
    assert "stored them" in out.stderr


@pytest.mark.parametrize("argv", [("user", "add", "carol", "--no-system-account"),
                                  ("passwd", "alice")])
def test_end_of_input_at_a_prompt_is_a_message_not_a_traceback(daemon, argv):
    """Bug 2: `jctotp user add carol </dev/null` ended in an EOFError traceback."""
    daemon.add_user("alice")
    out = subprocess.run([sys.executable, "-m", "pam_jctotp.cli", "--config",
                          str(daemon.config_path), *argv], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 130, out
    assert "Traceback" not in out.stderr and "EOFError" not in out.stderr
    assert "end of input" in out.stderr and "nothing was changed" in out.stderr
    assert out.stdout == ""
    assert [u["name"] for u in daemon.ok("user.list")] == ["alice"]


def test_end_of_input_at_a_daemon_prompt(daemon):
    daemon.add_user("nobody")
    out = cli_as(daemon, NOBODY, "passwd", input="")
    assert out.returncode == 130 and "Traceback" not in out.stderr, out


def start(daemon, *argv: str, uid: int | None = None) -> subprocess.Popen:
    return subprocess.Popen(command(daemon, argv, uid), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))


def wait_for_prompt(proc: subprocess.Popen, needle: str) -> None:
    seen = b""
    deadline = time.monotonic() + 20
    while needle.encode() not in seen:
        assert time.monotonic() < deadline, seen
        seen += os.read(proc.stderr.fileno(), 4096)


def test_ctrl_c_at_a_prompt(daemon):
    proc = start(daemon, "user", "add", "dave", "--no-system-account")
    wait_for_prompt(proc, "New password:")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "Traceback" not in err and "nothing was changed" in err


def test_daemon_gone_mid_verb(daemon):
    """The daemon dies while the user types: a message and exit 69."""
    daemon.add_user("nobody")
    proc = start(daemon, "passwd", uid=NOBODY)
    wait_for_prompt(proc, "password")
    daemon.kill()
    out, err = proc.communicate(PASSWORD + "\n", timeout=20)
    assert proc.returncode == 69, (out, err)
    assert "Traceback" not in err and "daemon" in err


def test_broken_pipe_is_quiet(daemon):
    for n in range(3):
        daemon.add_user(f"u{n}", mfa=False)
    proc = start(daemon, "user", "list")
    proc.stdout.close()   # `jctotp user list | head -0`
    proc.stdin.close()
    err = proc.stderr.read()
    assert proc.wait(20) != 0 and "Traceback" not in err, err


def test_a_config_typo_does_not_break_the_cli(daemon):
    """Bug 4: a typo made `jctotp unlock` and `jctotp doctor` exit 78 while the
    running daemon was fine. The CLI needs only the socket path."""
    daemon.add_user("alice")
    with open(daemon.config_path, "a") as fh:
        fh.write("max_atempts: 3\n")
    out = daemon.cli("unlock", "alice")
    assert out.returncode == 0, out.stderr
    assert "warning" in out.stderr and "1 problem" in out.stderr
    doc = one_document(daemon.cli("doctor", "--json"))
    typo = [f for f in doc if "max_atempts" in f["what"]]
    assert typo and typo[0]["level"] == "fail" and "did you mean 'max_attempts'" in \
        typo[0]["what"] and "line " in typo[0]["what"]
    assert any(f["level"] == "ok" and "daemon answers" in f["what"] for f in doc)


def test_audit_since_takes_the_time_audit_prints(daemon):
    """Bug 6: `--since 2026-11-27T02:18:00Z` was a usage error, and a time
    without a zone was read as local time."""
    daemon.add_user("alice", mfa=False)
    printed = daemon.cli("audit").stdout.split()[0]
    assert printed.endswith("Z")
    for since in (printed, printed[:-1], printed[:-1] + "+00:00"):
        out = daemon.cli("audit", "--since", since, "--json")
        assert out.returncode == 0, (since, out.stderr)
        assert [e["user"] for e in json.loads(out.stdout) if e["user"]] == ["alice"], since
    hour_later = printed[:11] + f"{(int(printed[11:13]) + 1) % 24:02d}" + printed[13:]
    if hour_later > printed:
        assert json.loads(daemon.cli("audit", "--since", hour_later[:-1], "--json").stdout) == []
    # In another zone: the same instant written as +05:00 finds the same event.
    local = daemon.cli("audit", "--since", "2000-01-01T05:00:00+05:00", "--json")
    assert [e["user"] for e in json.loads(local.stdout) if e["user"]] == ["alice"]
    bad = daemon.cli("audit", "--since", "yesterday")
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr and "UTC" in bad.stderr
