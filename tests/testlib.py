"""Test helpers shared by every tier: a real jctotpd in a temp dir, codes from a clock."""

from __future__ import annotations

import grp
import json
import os
import pwd
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import yaml

from pam_jctotp.cli import client

REPO = Path(__file__).resolve().parent.parent
# JCTOTP_TEST_DATABASE=postgres: every daemon of the run keeps its state in a fresh
# database of one private PostgreSQL instead of SQLite (scripts/test.sh, full tier).
TEST_DATABASE = os.environ.get("JCTOTP_TEST_DATABASE", "sqlite")
_postgres: list[Any] = []


def shared_postgres() -> Any:
    """One private PostgreSQL for the whole run (it dies with the test process)."""
    if not _postgres:
        import atexit

        from servers.postgres import new_cluster
        cluster = new_cluster()
        atexit.register(cluster.destroy)
        _postgres.append(cluster)
    return _postgres[0]


@dataclass
class Daemon:
    """A private jctotpd: its config, sockets and state in one temp dir."""

    dir: Path
    config: dict[str, Any]
    proc: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra environment (e.g. PATH)
    nofile: int | None = None  # RLIMIT_NOFILE, soft = hard (systemd's default soft is 1024)
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.dir / "jctotpd.log"

    @property
    def config_path(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def pam_socket(self) -> str:
        return self.config["pam_socket"]

    @property
    def audit_path(self) -> Path:
        return Path(self.config["audit_log"])

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config))

    def fleet_init(self) -> str:
        """`jctotp fleet init` with this daemon's config (schema + key check)."""
        self.write_config()
        done = self.cli("fleet", "init")
        if done.returncode != 0:   # as a daemon that does not start
            raise RuntimeError(f"jctotp fleet init failed: {done.stderr}")
        host_clock(self.config["database"])
        return done.stdout

    def start(self) -> Daemon:
        if TEST_DATABASE == "postgres" and "database" not in self.config:
            self.config["database"] = shared_postgres().new_database()
            self.fleet_init()
        self.write_config()
        env = dict(os.environ, JCTOTPD_TESTING="1", PYTHONPATH=str(REPO), **self.env)
        # Under scripts/test-asan.sh only the shim (loaded by the test process) is
        # instrumented: the daemon is pure Python and runs without the runtimes.
        for name in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS"):
            env.pop(name, None)
        # The log stays open in the test process: closing it after Popen (SIM115)
        # made tests/fleet/test_audit_spool.py lose the break-glass login_ok (not
        # yet understood).
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pam_jctotp.daemon", "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),  # noqa: SIM115
            env=env, preexec_fn=None if self.nofile is None else self._limit_files)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jctotpd exited: {self.log.read_text()}")
            if os.path.exists(self.config["control_socket"]):
                try:
                    client.request(self.config["control_socket"], "user.list")
                    return self
                except Exception:
                    pass
            time.sleep(0.05)
        raise RuntimeError("jctotpd did not start")

    def _limit_files(self) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def rss(self) -> int:
        """The daemon's resident memory (VmRSS), in bytes."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()

    # --- control socket ----------------------------------------------------

    def request(self, verb: str, answers: list[str] | None = None, **args: Any) -> client.Reply:
        """A control request as root (the test runs as root); prompts take `answers`."""
        pending = list(answers or [])
        self.transcript: list[tuple[str, str]] = []

        def interact(kind: str, text: str, echo: bool) -> str | None:
            self.transcript.append((kind, text))
            if kind == "prompt":
                if not pending:
                    raise AssertionError(f"unexpected prompt {text!r}")
                return pending.pop(0)
            return None

        return client.request(self.config["control_socket"], verb, args, interact)

    def ok(self, verb: str, **args: Any) -> Any:
        result = self.request(verb, **args)
        assert result.exit == 0, result.message
        return result.data

    def cli(self, *argv: str, input: str | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        return subprocess.run([sys.executable, "-m", "pam_jctotp.cli", "--config",
                               str(self.config_path), *argv], input=input, text=True,
                              capture_output=True, env=env, timeout=60)

    def set_clock(self, offset: float, skew: float = 0.0) -> None:
        """Move time by `offset`; `skew`: this host's own clock is wrong by so much
        (pam_jctotp/clock.py)."""
        self.ok("clock.set", offset=offset, skew=skew)

    def add_user(self, name: str, password: str = "correct horse battery", *,
                 mfa: bool = True, admin: bool = False) -> pyotp.TOTP | None:
        data = self.ok("user.add", name=name, password=password, mfa=mfa, admin=admin,
                       system_account=False)
        if not mfa:
            return None
        return pyotp.parse_uri(data["otpauth_uri"])

    def user(self, name: str) -> dict[str, Any]:
        return self.ok("user.show", name=name)

    def audit_events(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


def host_clock(uri: str, clock: str = "host") -> None:
    """As the schema's owner: the fleet's code check takes the hosts' clocks ('host'),
    since tests move time per host (set_clock); a fleet's default, 'database', takes
    the database server's (store/pg_codecheck.py)."""
    import psycopg
    with psycopg.connect(uri, autocommit=True) as db:
        db.execute("UPDATE jctotp_totp_rule SET clock = %s", (clock,))


_public_root: list[Path] = []


def public_dir() -> Path:
    """A fresh world-traversable dir under one per-process /tmp/jctotp-ctl-*, removed at exit.

    pytest's tmp_path is private to root (0700), so control sockets that an
    unprivileged test user must reach live here instead.
    """
    if not _public_root:
        import atexit
        import shutil

        root = Path(tempfile.mkdtemp(prefix="jctotp-ctl-"))
        os.chmod(root, 0o755)
        atexit.register(shutil.rmtree, root, True)
        _public_root.append(root)
    public = Path(tempfile.mkdtemp(dir=_public_root[0]))
    os.chmod(public, 0o755)
    return public


def daemon_config(tmp: Path, **overrides: Any) -> dict[str, Any]:
    # The control socket sits in a world-traversable dir so that tests can
    # connect as an unprivileged user (self-service verbs).
    public = public_dir()
    config = {
        "pam_socket": str(tmp / "pam.sock"),
        "control_socket": str(public / "control.sock"),
        "state_dir": str(tmp / "state"),
        "audit_log": str(tmp / "audit.jsonl"),
        "audit_syslog": False,
        "create_system_accounts": False,
        "fail_delay": 0.05,
        # fast_password_hash: argon2id at 1 MiB, one pass (~1 ms instead of ~30 ms a
        # hash or verify). A test about the hash's cost sets password_hash, or testing
        # without it (test_lockout's unknown-vs-known timing).
        "testing": {"clock_control": True, "fast_password_hash": True},
    }
    config.update(overrides)
    if "password_hash" in overrides and "testing" not in overrides:
        config["testing"] = {"clock_control": True}
    return config


def ldap_directory(slapd: Any, **overrides: Any) -> dict[str, Any]:
    """The `directory:` block for a test slapd (tests/servers/slapd.py), JumpCloud's layout."""
    block = {
        "type": "ldap",
        "uri": [slapd.ldaps_uri],
        "ca_file": str(slapd.ca_file),
        "base_dn": slapd.users_dn,
        "user_filter": "(&(objectClass=inetOrgPerson)(uid={user}))",
        "bind_dn": slapd.bind_dn,
        "bind_password_file": str(slapd.bind_password_file),
        "group_attribute": "memberOf",
        "timeout": 2,
    }
    block.update(overrides)
    return block


def children(pid: int) -> list[int]:
    """The live child processes of `pid`, from /proc (no pgrep: under
    scripts/test-asan.sh a pgrep inherits the sanitizer runtimes and hangs)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found += [int(c) for c in fh.read().split()]
        except OSError:
            continue
    return found


def code_at(totp: pyotp.TOTP, offset: float = 0.0) -> str:
    """The code a phone shows now (+offset seconds): from the secret and the clock."""
    return totp.at(time.time() + offset)


NEW_KEY_CODE = "<code of the key shown>"


def as_user(uid: int, socket_path: str, verb: str, args: dict[str, Any] | None = None,
            answers: list[str] | None = None, hang_up_after: int | None = None) -> dict:
    """A control request from an unprivileged uid (fork, setuid, connect).

    `hang_up_after=N` drops the connection after N prompts (a user pressing
    Ctrl-C half-way). An answer NEW_KEY_CODE is replaced by the current code
    of the key the daemon showed (a person scanning it with a phone).
    Returns {"exit", "message", "data", "transcript", "key"}.
    """
    script = f"""
import json, os, re, sys
import pyotp
from pam_jctotp.cli import client
answers = {answers or []!r}
transcript = []
prompts = 0
def interact(kind, text, echo):
    global prompts
    transcript.append([kind, text])
    if kind == "prompt":
        prompts += 1
        if {hang_up_after!r} is not None and prompts > {hang_up_after!r}:
            print(json.dumps({{"exit": None, "transcript": transcript, "key": shown_key()}}))
            os._exit(0)
        answer = answers.pop(0)
        if answer == {NEW_KEY_CODE!r}:
            answer = pyotp.TOTP(shown_key()).now()
        return answer
def shown_key():
    text = "\\n".join(t for _, t in transcript)
    found = re.findall(r"by hand: ([A-Z2-7 ]+)\\n", text)
    return found[-1].replace(" ", "") if found else None
os.setgroups([]); os.setgid({uid}); os.setuid({uid})
r = client.request({socket_path!r}, {verb!r}, {args or {}!r}, interact)
print(json.dumps({{"exit": r.exit, "message": r.message, "data": r.data,
                  "transcript": transcript, "key": shown_key()}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def eventually(check, timeout: float = 10.0):
    """Poll `check()` every 0.1 s until it is true or `timeout` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def free_uid() -> int:
    """A UID (and GID) no local account or group has (for directory users whose Linux
    accounts a test makes)."""
    while True:
        uid = random.randint(42000, 59000)
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(uid)
        except KeyError:
            return uid


def account(name: str) -> pwd.struct_passwd | None:
    """The Linux account `name`, or None."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None
