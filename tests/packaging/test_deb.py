"""The .deb of packaging/deb/build.sh: its contents, then a real install,
use, pam-auth-update and purge in a debian:bookworm-slim container.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from pam_jctotp import config as configmod

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "packaging/deb/config.yaml"
MULTIARCH = subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], capture_output=True,
                           text=True).stdout.strip() or "x86_64-linux-gnu"
SHIM = f"/lib/{MULTIARCH}/security/pam_jctotp.so"
PASSWORD = "Correct-Horse-7"


def test_example_config_has_every_key_at_its_default():
    """Uncommenting every `#key: value` line of the conffile gives Config(),
    except unknown_users, which the package sets to ignore (the pam-auth-update
    profile must not lock root out)."""
    text = EXAMPLE_CONFIG.read_text()
    shipped = yaml.safe_load(text)
    assert shipped == {"unknown_users": "ignore"}
    assert configmod.parse(shipped) == configmod.Config(unknown_users="ignore")
    uncommented = "\n".join(re.sub(r"^#(?=[a-z_]+:|  [a-z_]+:)", "", line)
                            for line in text.splitlines())
    raw = yaml.safe_load(uncommented)
    documented = set(raw) | {"testing"}  # test-suite only, mentioned in prose
    assert documented == {f.name for f in configmod.fields(configmod.Config)}
    raw.pop("issuer")  # the default has the host name in it
    raw.pop("unknown_users")
    assert configmod.parse(raw) == configmod.Config()


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.docker
def test_contents_modes_and_control(deb):
    assert re.fullmatch(r"pam-jctotp_[0-9.]+-[0-9]+_[a-z0-9]+\.deb", deb.name)
    entries = {}
    for line in dpkg_deb("-c", str(deb)).splitlines():
        mode, owner, _size, _date, _time, path = line.split(None, 5)
        entries[path.removeprefix(".")] = (mode, owner)
    assert {owner for _, owner in entries.values()} == {"root/root"}
    want = {
        SHIM: "-rw-r--r--",
        "/usr/sbin/jctotpd": "-rwxr-xr-x",
        "/usr/bin/jctotp": "-rwxr-xr-x",
        "/etc/jctotp/config.yaml": "-rw-r--r--",
        "/lib/systemd/system/jctotpd.service": "-rw-r--r--",
        "/usr/share/pam-configs/jctotp": "-rw-r--r--",
        "/usr/lib/python3/dist-packages/pam_jctotp/daemon.py": "-rw-r--r--",
        "/usr/share/doc/pam-jctotp/copyright": "-rw-r--r--",
        "/usr/share/doc/pam-jctotp/examples/sshd_config.d/jctotp.conf": "-rw-r--r--",
        "/usr/share/doc/pam-jctotp/examples/pam.d/sshd": "-rw-r--r--",
    }
    for path, mode in want.items():
        assert entries.get(path, (None,))[0] == mode, path
    # Examples only: nothing enables MFA for sshd or any service on install.
    assert not [p for p in entries if p.startswith(("/etc/ssh", "/etc/pam.d"))]
    modules = {p.name for p in (REPO / "pam_jctotp").glob("*.py")}
    shipped = {p.rsplit("/", 1)[1] for p in entries
               if p.startswith("/usr/lib/python3/dist-packages/pam_jctotp/")}
    assert modules <= shipped

    depends = dpkg_deb("-f", str(deb), "Depends")
    for dep in ("python3 (>= 3.11)", "python3-pyotp (>= 2.6)", "python3-cryptography (>= 38)",
                "python3-argon2 (>= 21.1)", "python3-segno (>= 1.4.1)", "python3-yaml (>= 6.0)",
                "libpam0g"):
        assert dep in depends
    assert "python3-sdnotify (>= 0.3.1)" in dpkg_deb("-f", str(deb), "Recommends")
    assert dpkg_deb("-I", str(deb), "conffiles").split() == ["/etc/jctotp/config.yaml"]


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


@pytest.fixture
def container(deb, docker_engine):
    # Host network for apt; tini (--init) reaps the daemon we kill.
    c = Container(deb, "--init", "--network", "host",
                  "-v", f"{REPO / 'tests/pam'}:/src/tests/pam:ro", command=("sleep", "infinity"))
    yield c
    c.remove()


@pytest.mark.docker
def test_install_use_pam_auth_update_and_purge(container, deb):
    c = container
    pkg = f"/pkg/{deb.name}"
    # The local base image has every dependency; a pulled one needs the lists.
    install = f"apt-get install -y -q --no-install-recommends {pkg}"
    if c.sh(install, ok=False).returncode != 0:
        c.sh(f"apt-get update -q && {install}")
    assert c.sh("dpkg-query -W -f='${Status}' pam-jctotp").stdout == "install ok installed"
    assert c.sh("stat -c %a /var/lib/jctotp /var/log/jctotp").stdout.split() == ["700", "750"]
    assert c.sh(f"stat -c %a {SHIM}").stdout.strip() == "644"
    # No login stack changed by the installation.
    assert "pam_jctotp" not in c.sh("cat /etc/pam.d/*").stdout

    # The shipped (all-defaults) config is valid; the daemon runs with it.
    check = c.sh("jctotpd --check --config /etc/jctotp/config.yaml")
    assert "OK" in check.stdout
    c.sh("setsid jctotpd </dev/null >/var/log/jctotp/jctotpd.log 2>&1 & echo $! >/tmp/jctotpd.pid")
    c.sh("for i in $(seq 100); do [ -S /run/jctotp/control.sock ] && exit 0; sleep 0.1; done; "
         "cat /var/log/jctotp/jctotpd.log; exit 1")
    c.sh("jctotp user add x --password-stdin --no-system-account", stdin=PASSWORD + "\n")
    # y gets a Linux account too (useradd through the daemon) and a Unix
    # password, so that pam_unix of common-auth accepts it.
    c.sh("jctotp user add y --password-stdin", stdin=PASSWORD + "\n")
    c.sh("chpasswd", stdin=f"y:{PASSWORD}\n")
    users = {u["name"]: u for u in json.loads(c.sh("jctotp user list --json").stdout)}
    assert set(users) == {"x", "y"} and users["x"]["has_password"]
    assert c.sh("getent passwd y").stdout.startswith("y:")

    # The pam-auth-update profile: off until the admin enables it.
    c.sh("pam-auth-update --package")
    assert "pam_jctotp" not in c.sh("cat /etc/pam.d/common-auth").stdout
    c.sh("pam-auth-update --package --enable jctotp")
    auth = c.sh("cat /etc/pam.d/common-auth").stdout
    account = c.sh("cat /etc/pam.d/common-account").stdout
    assert re.search(r"^auth\s+required\s+pam_jctotp\.so factors=totp\s*$", auth, re.M)
    assert re.search(r"^account\s+required\s+pam_jctotp\.so\s*$", account, re.M)
    # ... after pam_unix's Primary block, so only a right password reaches it.
    assert auth.index("pam_unix.so") < auth.index("pam_permit.so") < auth.index("pam_jctotp")

    # A real login through the common stacks, the module found by libpam in
    # the multiarch dir: pam_unix asks for the password, pam_jctotp (MFA off
    # for y) says IGNORE, the stack succeeds.
    c.sh("printf '@include common-auth\\n@include common-account\\n' >/etc/pam.d/jctotp-test")
    name, transcript = c.pam("y", [PASSWORD])
    assert name == "PAM_SUCCESS", transcript
    assert [t for t in transcript if t.startswith("prompt")] == ["prompt_off Password: "]
    name, _ = c.pam("y", ["wrong"])
    assert name == "PAM_AUTH_ERR"
    # Fail closed: with the daemon down the same right password is refused.
    c.sh("pid=$(cat /tmp/jctotpd.pid); kill $pid; "
         "for i in $(seq 50); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; exit 1")
    name, _ = c.pam("y", [PASSWORD])
    assert name == "PAM_AUTHINFO_UNAVAIL"

    # Purge: the profile leaves the stacks (prerm), every file and the state go.
    c.sh("rm /etc/pam.d/jctotp-test")
    purge = c.sh("dpkg --purge pam-jctotp")
    assert "warning" not in (purge.stdout + purge.stderr).lower()
    assert "pam_jctotp" not in c.sh("cat /etc/pam.d/*").stdout
    left = c.sh(f"ls -d {SHIM} /etc/jctotp /var/lib/jctotp /var/log/jctotp /usr/sbin/jctotpd "
                "/usr/lib/python3/dist-packages/pam_jctotp /usr/share/pam-configs/jctotp "
                "/lib/systemd/system/jctotpd.service 2>/dev/null", ok=False)
    assert left.stdout == ""
    assert c.sh("dpkg-query -W -f='${Status}' pam-jctotp", ok=False).stdout in (
        "", "unknown ok not-installed")


SYSTEMD_IMAGE = "jctotp-deb-systemd:test"
SYSTEMD_DOCKERFILE = """FROM debian:bookworm-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \\
    --no-install-recommends systemd systemd-sysv dbus >/dev/null && \\
    rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d
CMD ["/lib/systemd/systemd"]
"""


@pytest.fixture
def systemd_container(deb, docker_engine, tmp_path):
    """systemd as PID 1 (no network; CAP_SYS_ADMIN so that the unit's mount
    namespace is really set up, not skipped as in an unprivileged container)."""
    (tmp_path / "Dockerfile").write_text(SYSTEMD_DOCKERFILE)
    built = subprocess.run(["docker", "build", "-q", "--network", "host", "-t", SYSTEMD_IMAGE,
                            str(tmp_path)], capture_output=True, text=True)
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
    yield c
    c.remove()


@pytest.mark.docker
def test_systemd_unit_starts_sandboxed_and_creates_accounts(systemd_container, deb):
    c = systemd_container
    c.sh(f"apt-get install -y -q --no-install-recommends /pkg/{deb.name}")
    # postinst enabled and started it; Type=notify: active only after READY=1.
    c.sh("for i in $(seq 100); do systemctl is-active -q jctotpd && exit 0; sleep 0.1; done; "
         "systemctl status jctotpd; exit 1")
    assert c.sh("systemctl is-enabled jctotpd").stdout.strip() == "enabled"
    assert "ExecStartPre" in c.sh("systemctl status jctotpd --no-pager").stdout

    # What the daemon may write, seen from inside its mount namespace.
    probe = ("pid=$(systemctl show -p MainPID --value jctotpd); for f in $PATHS; do "
             "if nsenter -t $pid -m touch $f/.probe 2>/dev/null; then echo rw; "
             "nsenter -t $pid -m rm $f/.probe; else echo ro; fi; done")
    access = {
        "/var/lib/jctotp": "rw", "/var/log/jctotp": "rw", "/run/jctotp": "rw",
        "/etc": "rw", "/home": "rw",  # useradd (create_system_accounts)
        "/usr": "ro", "/root": "ro", "/etc/pam.d": "ro", "/etc/jctotp": "ro",
        "/etc/systemd": "ro", "/var/cache": "ro",
    }
    got = c.sh(f"PATHS='{' '.join(access)}'; {probe}").stdout.split()
    assert dict(zip(access, got, strict=True)) == access
    assert c.sh("stat -c %a /var/lib/jctotp").stdout.strip() == "700"

    # useradd through the sandboxed daemon: a Linux account with its home.
    c.sh("jctotp user add alice --password-stdin", stdin=PASSWORD + "\n")
    assert c.sh("stat -c %U /home/alice").stdout.strip() == "alice"

    c.sh("dpkg --purge pam-jctotp")
    assert c.sh("systemctl is-active jctotpd", ok=False).stdout.strip() == "inactive"
    assert c.sh("ls /etc/systemd/system/multi-user.target.wants/").stdout.count("jctotpd") == 0
    assert c.sh("ls -d /var/lib/jctotp 2>/dev/null", ok=False).stdout == ""
