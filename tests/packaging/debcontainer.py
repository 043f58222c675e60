"""Containers of the packaging tier: a Debian 12 container with the .deb's folder at
/pkg (`Container`), and one booted with systemd as PID 1 (`boot_systemd`)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

SYSTEMD_IMAGE = "jctotp-deb-systemd:test"
SYSTEMD_DOCKERFILE = """FROM debian:bookworm-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \\
    --no-install-recommends systemd systemd-sysv dbus procps logrotate >/dev/null && \\
    rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d
CMD ["/lib/systemd/systemd"]
"""


class Container:
    """A container with the .deb's folder at /pkg; commands run with docker exec."""

    def __init__(self, deb: Path, *run_args: str, image: str = "debian:bookworm-slim",
                 command: tuple[str, ...] = ()):
        self.name = f"jctotp-deb-{uuid.uuid4().hex[:8]}"
        subprocess.run(["docker", "run", "-d", "--rm", "--name", self.name,
                        "-v", f"{deb.parent}:/pkg:ro", *run_args, image, *command],
                       check=True, capture_output=True)

    def sh(self, script: str, stdin: str | None = None, ok: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["docker", "exec", "-i", "-e", "DEBIAN_FRONTEND=noninteractive", self.name,
             "bash", "-c", script],
            input=stdin, capture_output=True, text=True, timeout=timeout)
        if ok:
            assert proc.returncode == 0, f"{script}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def pam(self, user: str, answers: list[str]) -> tuple[str, list[str]]:
        """pam_authenticate + pam_acct_mgmt of service jctotp-test with /etc/pam.d."""
        program = (
            "import sys; sys.path.insert(0, '/src/tests/pam'); import pamdriver as d\n"
            f"r = d.run('/etc/pam.d', 'jctotp-test', {user!r}, {answers!r}, call='both')\n"
            "print(r.name)\n"
            "for m in r.transcript: print(m.style, m.text)\n")
        out = self.sh("python3 -", stdin=program).stdout
        name, *transcript = out.splitlines()
        return name, transcript

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)


def boot_systemd(deb: Path, build_dir: Path) -> Container:
    """systemd as PID 1 (no network; CAP_SYS_ADMIN so that the unit's mount
    namespace is really set up, not skipped as in an unprivileged container).
    Skips the test where systemd cannot be installed or does not boot."""
    (build_dir / "Dockerfile").write_text(SYSTEMD_DOCKERFILE)
    built = subprocess.run(["docker", "build", "-q", "--network", "host", "-t", SYSTEMD_IMAGE,
                            str(build_dir)], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"cannot install systemd into the base image: {built.stderr[-300:]}")
    c = Container(deb, "--network", "none", "--cap-add", "SYS_ADMIN",
                  "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                  "--tmpfs", "/run", "--tmpfs", "/run/lock",
                  "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", image=SYSTEMD_IMAGE)
    booted = c.sh("for i in $(seq 150); do systemctl is-system-running 2>/dev/null | "
                  "grep -qE 'running|degraded' && exit 0; sleep 0.1; done; exit 1", ok=False)
    if booted.returncode != 0:
        logs = subprocess.run(["docker", "logs", c.name], capture_output=True, text=True)
        c.remove()
        pytest.skip(f"systemd does not boot in a container here: {logs.stdout[-300:]}")
    return c


def main_pid(c: Container) -> str:
    return c.sh("systemctl show -p MainPID --value jctotpd").stdout.strip()
