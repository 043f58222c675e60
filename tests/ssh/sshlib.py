"""The real sshd in a container and the real OpenSSH client, driven like a person.

A container runs the image of packaging/docker/Dockerfile with host
networking; sshd listens on 127.0.0.1 only, on a free port. The client is the
host's `ssh`, spawned under pexpect; it answers the prompts it sees.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pexpect
import pyotp
import yaml

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("JCTOTP_IMAGE", "jctotp:dev")  # build-image.sh builds the same tag

# Small delays and limits so that the suite runs in minutes.
TEST_CONFIG: dict[str, Any] = {
    "pam_socket": "/run/jctotp/pam.sock",
    "control_socket": "/run/jctotp/control.sock",
    "state_dir": "/var/lib/jctotp",
    "audit_log": "/var/log/jctotp/audit.jsonl",
    "audit_syslog": False,
    "issuer": "jctotp test",
    "create_system_accounts": True,
    "fail_delay": 0.2,
    "max_attempts": 3,
    "unlock_after": 0,
}

SSH_OPTS = [
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    # LogLevel INFO as a person has it: the client prints keyboard-interactive
    # text that comes without a prompt ("account locked") only at INFO.
    "-o", "LogLevel=" + os.environ.get("JCTOTP_SSH_LOGLEVEL", "INFO"),
    "-o", "NumberOfPasswordPrompts=1",
    # sshd offers no method after a lock (MAXTRIES); a default client then
    # still asks "user@host's password:", which would only hang the test.
    "-o", "PasswordAuthentication=no",
    "-o", "ConnectTimeout=10", "-F", "/dev/null",
]
DENIED = "Permission denied"
KEY_RE = re.compile(r"key by hand: ((?:[A-Z2-7]{4} ?)+)")


def build_image() -> None:
    """scripts/build-image.sh: idempotent, seconds when the base is cached."""
    subprocess.run([str(REPO / "scripts/build-image.sh")], check=True,
                   stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Totp:
    """A user's authenticator. Never offers a time step twice (replay guard)."""

    secret: str
    last_step: int = -1

    def fresh(self) -> str:
        """A code of a step not yet used: now, or the next step (inside the
        ±1 window); waits for the clock when both are used."""
        while True:
            now = int(time.time() // 30)
            step = max(now, self.last_step + 1)
            if step <= now + 1:
                self.last_step = step
                return pyotp.TOTP(self.secret).at(step * 30)
            time.sleep(1)

    def wrong(self) -> str:
        """A code that matches no step inside the window."""
        totp = pyotp.TOTP(self.secret)
        now = time.time()
        valid = {totp.at(now + d) for d in (-60, -30, 0, 30, 60)}
        return next(c for c in (f"{i:06d}" for i in range(123456, 999999, 7919))
                    if c not in valid)


@dataclass
class Sshd:
    """One container: sshd on 127.0.0.1:port, jctotpd inside."""

    container: Any
    port: int
    users: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, mode: str = "password", *, image: str = IMAGE, **config: Any) -> Sshd:
        """`image`: the test image, or one layered on it (bench/ssh_login.py)."""
        port = free_port()
        cfg = dict(TEST_CONFIG, **config)
        container = docker.from_env().containers.run(
            image, detach=True, network_mode="host", auto_remove=False,
            environment={"SSHD_PORT": str(port), "JCTOTP_SSH_MODE": mode,
                         "JCTOTP_CONFIG_YAML": yaml.safe_dump(cfg)},
            labels={"jctotp-test": "1"})
        sshd = cls(container, port)
        sshd.wait_listening()
        return sshd

    def wait_listening(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.container.reload()
            if self.container.status != "running":
                raise RuntimeError("container exited:\n" + self.logs())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("sshd did not come up:\n" + self.logs())

    def logs(self) -> str:
        daemon = self.sh("cat /var/log/jctotp/jctotpd.log 2>/dev/null")[1]
        return (self.container.logs().decode(errors="replace")
                + "\n--- jctotpd.log ---\n" + daemon)

    def stop(self) -> None:
        self.container.remove(force=True)

    def sh(self, cmd: str, stdin: str | None = None, user: str = "root") -> tuple[int, str]:
        """Run a shell command inside; (exit code, stdout+stderr)."""
        argv = ["docker", "exec", "-i", "-u", user, self.container.id, "sh", "-c", cmd]
        out = subprocess.run(argv, input=stdin, text=True, capture_output=True, timeout=60)
        return out.returncode, out.stdout + out.stderr

    def ok(self, cmd: str, stdin: str | None = None) -> str:
        rc, out = self.sh(cmd, stdin)
        assert rc == 0, f"{cmd!r} failed ({rc}):\n{out}"
        return out

    def add_user(self, name: str, password: str, *, enrolled: bool = True) -> Totp | None:
        """`jctotp user add` (creates the Linux account too); enrolled: with a secret."""
        out = self.ok(f"jctotp user add {name} --password-stdin"
                      + (" --mfa" if enrolled else ""), stdin=password + "\n")
        self.users.append(name)
        if not enrolled:
            return None
        return Totp(re.search(r"secret=([A-Z2-7]+)", out).group(1))

    def exec_tty(self, user: str, command: str) -> pexpect.spawn:
        """A command inside the container on a terminal (su, sudo prompt there)."""
        return pexpect.spawn("docker", ["exec", "-it", "-u", user, self.container.id,
                                        "sh", "-c", command],
                             encoding="utf-8", timeout=20)

    def show(self, name: str) -> dict[str, Any]:
        return yaml.safe_load(self.ok(f"jctotp user show {name} --json"))

    def ssh(self, user: str, command: str | None = None, *, tty: bool = False,
            key: Path | None = None) -> pexpect.spawn:
        argv = ["-p", str(self.port), *SSH_OPTS]
        if key is None:
            argv += ["-o", "PubkeyAuthentication=no", "-o", "IdentitiesOnly=yes"]
        else:
            argv += ["-o", "IdentitiesOnly=yes", "-i", str(key)]
        argv += ["-tt"] if tty else ["-T"]
        argv.append(f"{user}@127.0.0.1")
        if command:
            argv.append(command)
        return pexpect.spawn("ssh", argv, encoding="utf-8", timeout=20,
                             dimensions=(60, 200))

    def login(self, user: str, password: str | None, code: str | None,
              command: str = "echo ran-as-$(id -un)", key: Path | None = None) -> Result:
        """Password (unless None), then the code; returns what the client saw."""
        child = self.ssh(user, command, key=key)
        if password is not None:
            child.expect_exact("Directory password: ")
            child.sendline(password)
        if code is not None:
            i = child.expect_exact(["Verification code: ", pexpect.EOF])
            if i == 0:
                child.sendline(code)
        return finish(child)


@dataclass
class Result:
    output: str
    status: int

    @property
    def ok(self) -> bool:
        return self.status == 0


def finish(child: pexpect.spawn, timeout: float = 20) -> Result:
    child.expect(pexpect.EOF, timeout=timeout)
    child.close()
    return Result(child.before or "", child.exitstatus if child.exitstatus is not None else -1)


def transcript(child: pexpect.spawn) -> str:
    return child.before + (child.after if isinstance(child.after, str) else "")
