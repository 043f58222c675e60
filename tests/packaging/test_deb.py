"""The .deb of packaging/deb/build.sh: its contents, then a real install,
use, pam-auth-update and purge in a debian:bookworm-slim container.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from debcontainer import Container, main_pid

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
    # Documented with an example, not a default: the default is "absent"
    # (local directory, SQLite, state_dir/secret.key, the hostname, no group, no
    # metrics, no portal, no mail, no local override of the fleet's policy).
    for key in ("directory", "database", "secret_key_file", "host_name", "break_glass_group",
                "metrics_textfile", "metrics_listen", "portal", "smtp", "fleet_name",
                "local_overrides"):
        raw.pop(key)
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
        "/usr/bin/jctotp-portal": "-rwxr-xr-x",
        "/lib/systemd/system/jctotp-portal.service": "-rw-r--r--",
        "/usr/lib/python3/dist-packages/pam_jctotp/portal/templates/signin.html": "-rw-r--r--",
        "/usr/lib/python3/dist-packages/pam_jctotp/mail_templates/password_reset.txt":
            "-rw-r--r--",
        "/usr/share/doc/pam-jctotp/examples/pam.d/passwd": "-rw-r--r--",
        "/etc/jctotp/config.yaml": "-rw-r--r--",
        "/lib/systemd/system/jctotpd.service": "-rw-r--r--",
        "/usr/share/pam-configs/jctotp": "-rw-r--r--",
        "/usr/lib/python3/dist-packages/pam_jctotp/daemon/serve.py": "-rw-r--r--",
        "/usr/share/doc/pam-jctotp/copyright": "-rw-r--r--",
        "/usr/share/doc/pam-jctotp/examples/sshd_config.d/jctotp.conf": "-rw-r--r--",
        "/usr/share/doc/pam-jctotp/examples/pam.d/sshd": "-rw-r--r--",
        "/usr/share/man/man8/pam_jctotp.8.gz": "-rw-r--r--",
        "/usr/share/man/man8/jctotp.8.gz": "-rw-r--r--",
        "/usr/share/man/man8/jctotpd.8.gz": "-rw-r--r--",
        "/usr/share/man/man5/jctotp.yaml.5.gz": "-rw-r--r--",
        "/usr/share/bash-completion/completions/jctotp": "-rw-r--r--",
        "/etc/logrotate.d/pam-jctotp": "-rw-r--r--",
    }
    for path, mode in want.items():
        assert entries.get(path, (None,))[0] == mode, path
    # Examples only: nothing enables MFA for sshd or any service on install.
    assert not [p for p in entries if p.startswith(("/etc/ssh", "/etc/pam.d"))]
    modules = {str(p.relative_to(REPO)) for p in (REPO / "pam_jctotp").rglob("*.py")
               if "__pycache__" not in p.parts}
    shipped = {p.removeprefix("/usr/lib/python3/dist-packages/") for p in entries
               if p.startswith("/usr/lib/python3/dist-packages/pam_jctotp/")}
    assert modules <= shipped

    # Real entry points: the system's python3 runs them (no /usr/local one
    # takes over) and the process is named after the script (pgrep -x).
    for script, module in (("usr/sbin/jctotpd", "pam_jctotp.daemon"),
                           ("usr/bin/jctotp", "pam_jctotp.cli.main")):
        body = deb_file(deb, script)
        assert body.startswith("#!/usr/bin/python3\n"), script
        assert f"from {module} import main" in body, script

    depends = dpkg_deb("-f", str(deb), "Depends")
    assert "pyotp" not in depends  # only the tests compute codes with pyotp
    for dep in ("python3 (>= 3.11)", "python3-cryptography (>= 38)",
                "python3-argon2 (>= 21.1)", "python3-segno (>= 1.4.1)", "python3-yaml (>= 6.0)",
                "libpam0g"):
        assert dep in depends
    assert "python3-sdnotify (>= 0.3.1)" in dpkg_deb("-f", str(deb), "Recommends")
    assert dpkg_deb("-I", str(deb), "conffiles").split() == [
        "/etc/jctotp/config.yaml", "/etc/logrotate.d/pam-jctotp"]


def deb_file(deb: Path, path: str) -> str:
    """One file of the .deb's data archive."""
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                         check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        member = archive.extractfile(f"./{path}")
        assert member is not None, path
        return member.read().decode()


def test_unit_reload_checks_first_and_raises_the_descriptor_limit():
    unit = (REPO / "packaging/deb/jctotpd.service").read_text()
    lines = [line for line in unit.splitlines() if not line.startswith("#")]
    check = "/usr/sbin/jctotpd --check --config /etc/jctotp/config.yaml"
    assert f"ExecStartPre=-{check}" in lines  # reports; never blocks a start (see the unit)
    # Reload: the check first, so a broken file never reaches the daemon.
    reload = [line for line in lines if line.startswith("ExecReload=")]
    assert reload == [f"ExecReload={check}", "ExecReload=/bin/kill -HUP $MAINPID"]
    assert "LimitNOFILE=65536" in lines
    # The hardening stays.
    for setting in ("ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
                    "SystemCallFilter=@system-service", "ProtectProc=invisible"):
        assert setting in lines, setting


@pytest.fixture
def container(deb, docker_engine):
    # Host network for apt; tini (--init) reaps the daemon we kill.
    c = Container(deb, "--init", "--network", "host",
                  "-v", f"{REPO / 'tests/pam'}:/src/tests/pam:ro",
                  "-v", f"{REPO / 'tests/packaging'}:/src/tests/packaging:ro",
                  command=("sleep", "infinity"))
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

    # The profile does not lock root out: the real setuid su, typed on a
    # pty by y, asks root's password once and nothing else (root is not in
    # the directory; the shipped config says unknown_users: ignore).
    c.sh("chpasswd", stdin=f"root:{PASSWORD}\n")
    su = c.sh(f"python3 /src/tests/packaging/su_pty.py y {PASSWORD}").stdout
    assert "SU-OK" in su and su.rstrip().endswith("EXIT 0"), su
    assert su.count("Password:") == 1 and "code" not in su, su

    # The daemon is a process named jctotpd (what pgrep -x matches).
    assert c.sh("grep -lx jctotpd /proc/[0-9]*/comm | wc -l").stdout.strip() == "1"
    # Fail closed: with the daemon down the same right password is refused.
    c.sh("pid=$(cat /tmp/jctotpd.pid); kill $pid; "
         "for i in $(seq 50); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; exit 1")
    name, _ = c.pam("y", [PASSWORD])
    assert name == "PAM_AUTHINFO_UNAVAIL"

    # A fleet host's credentials and copies, where `fleet host add` and jctotpd put
    # them (issue 22); root's ~/.pgpass also holds a line that is not ours.
    creds = ["/etc/jctotp/pgpass", "/etc/jctotp/web1.pgpass", "/etc/jctotp/ldap.pw",
             "/var/lib/jctotp/secret.key", "/var/lib/jctotp/break-glass.db",
             "/var/lib/jctotp/break-glass.matched", "/var/lib/jctotp/audit-spool"]
    c.sh(f"umask 077; for f in {' '.join(creds)}; do echo x >$f; done; "
         "printf 'db:5432:jctotp:jctotp_ab12cd34_web1:pw\\ndb:5432:bi:reporting:keep\\n' "
         ">/root/.pgpass; echo 'database: postgresql://jctotp_ab12cd34_web1@db/jctotp"
         "?passfile=/etc/jctotp/web1.pgpass' >>/etc/jctotp/config.yaml")

    # Purge: the profile leaves the stacks (prerm), every file and the state go.
    c.sh("rm /etc/pam.d/jctotp-test")
    purge = c.sh("dpkg --purge pam-jctotp")
    assert c.sh(f"ls {' '.join(creds)} 2>/dev/null", ok=False).stdout == ""
    assert c.sh("cat /root/.pgpass").stdout == "db:5432:bi:reporting:keep\n"
    assert "warning" not in (purge.stdout + purge.stderr).lower()
    assert "pam_jctotp" not in c.sh("cat /etc/pam.d/*").stdout
    left = c.sh(f"ls -d {SHIM} /etc/jctotp /var/lib/jctotp /var/log/jctotp /usr/sbin/jctotpd "
                "/usr/lib/python3/dist-packages/pam_jctotp /usr/share/pam-configs/jctotp "
                "/lib/systemd/system/jctotpd.service 2>/dev/null", ok=False)
    assert left.stdout == ""
    assert c.sh("dpkg-query -W -f='${Status}' pam-jctotp", ok=False).stdout in (
        "", "unknown ok not-installed")


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


@pytest.fixture(scope="module")
def tools_container(deb, docker_engine):
    """bookworm with lintian, logrotate and bash-completion (man-db comes with
    lintian), and the .deb installed after lintian has looked at it."""
    c = Container(deb, "--network", "host", command=("sleep", "infinity"))
    c.sh("apt-get update -q && apt-get install -y -q --no-install-recommends "
         "lintian logrotate bash-completion man-db", timeout=600)
    yield c
    c.remove()


@pytest.mark.docker
def test_lintian_has_nothing_to_say(tools_container, deb):
    c = tools_container
    out = c.sh(f"lintian --pedantic --fail-on error,warning,pedantic /pkg/{deb.name}; "
               "echo rc=$?", ok=False)
    tags = [line for line in out.stdout.splitlines() if re.match(r"[EWP]: ", line)]
    assert tags == [] and "rc=0" in out.stdout, out.stdout + out.stderr


@pytest.mark.docker
def test_installed_man_pages_logrotate_and_completion(tools_container, deb):
    c = tools_container
    c.sh(f"apt-get install -y -q --no-install-recommends /pkg/{deb.name}")
    for page, section in (("pam_jctotp", 8), ("jctotp", 8), ("jctotpd", 8), ("jctotp.yaml", 5)):
        assert c.sh(f"man -w {section} {page}").stdout.strip() == \
            f"/usr/share/man/man{section}/{page}.{section}.gz"
        rendered = c.sh(f"MANWIDTH=80 MAN_KEEP_STDERR=1 man --warnings {section} {page}")
        assert rendered.stderr == "" and rendered.stdout.count("\n") > 20, rendered.stderr

    # logrotate accepts the file and rotates the audit log; the postrotate
    # signal finds no daemon here and is no error.
    c.sh("install -d -m 0750 /var/log/jctotp && echo '{}' >/var/log/jctotp/audit.jsonl")
    debug = c.sh("logrotate -d /etc/logrotate.d/pam-jctotp 2>&1")
    assert "error" not in debug.stdout.lower(), debug.stdout
    c.sh("logrotate -f /etc/logrotate.d/pam-jctotp")
    assert c.sh("ls /var/log/jctotp").stdout.split() == ["audit.jsonl.1"]

    def complete(line: str) -> list[str]:
        script = ("source /usr/share/bash-completion/bash_completion; "
                  "source /usr/share/bash-completion/completions/jctotp; "
                  f"COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; "
                  "read -ra COMP_WORDS <<<\"$COMP_LINE\"; "
                  "[[ $COMP_LINE == *' ' ]] && COMP_WORDS+=(''); "
                  "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _jctotp; "
                  "printf '%s\\n' \"${COMPREPLY[@]}\"")
        return c.sh(script).stdout.split()

    assert "mfa" in complete("jctotp ") and "doctor" in complete("jctotp ")
    assert complete("jctotp mfa ") == ["enable", "reset", "disable"]
    assert {"--enroll-now", "--compromised"} <= set(complete("jctotp mfa reset --"))
    assert "--exist-ok" in complete("jctotp user add bob --")


def install_and_wait(c: Container, deb: Path) -> str:
    c.sh(f"apt-get install -y -q --no-install-recommends /pkg/{deb.name}")
    c.sh("for i in $(seq 100); do systemctl is-active -q jctotpd && exit 0; sleep 0.1; done; "
         "systemctl status jctotpd; exit 1")
    return main_pid(c)


@pytest.mark.docker
def test_systemd_broken_config_never_stops_the_daemon(systemd_container, deb):
    c = systemd_container
    pid = install_and_wait(c, deb)
    # pgrep -x finds the daemon by its name (a #!/usr/bin/python3 script).
    assert c.sh("pgrep -x jctotpd").stdout.split() == [pid]
    # LimitNOFILE=65536, or as much of it as the container's own hard limit
    # (systemd's, PID 1's) allows.
    ceiling = int(c.sh("grep 'Max open files' /proc/1/limits").stdout.split()[4])
    limits = c.sh(f"grep 'Max open files' /proc/{pid}/limits").stdout.split()
    assert limits[3:5] == [str(min(65536, ceiling))] * 2, limits
    show = c.sh("systemctl show jctotpd -p LimitNOFILE -p ExecReload -p ExecStartPre").stdout
    assert "LimitNOFILE=65536" in show, show
    assert "jctotpd --check" in show and "kill -HUP" in show, show

    # A typo: `systemctl reload` fails at the check and never signals the
    # daemon, which keeps serving with the config it has.
    c.sh("cp /etc/jctotp/config.yaml /tmp/good.yaml && echo 'max_atempts: 3' "
         ">>/etc/jctotp/config.yaml")
    assert c.sh("systemctl reload jctotpd", ok=False).returncode != 0
    assert c.sh("systemctl is-active jctotpd").stdout.strip() == "active"
    assert main_pid(c) == pid
    assert "max_atempts" in c.sh("journalctl -u jctotpd --no-pager").stdout

    # An upgrade (here: a reinstall) with that typo: postinst says why it did
    # not restart, the install succeeds, the daemon runs on.
    reinstall = c.sh(f"dpkg -i /pkg/{deb.name}")
    assert "jctotpd was NOT restarted" in reinstall.stderr, reinstall.stderr
    assert main_pid(c) == pid

    # A first install that cannot start the daemon says so and succeeds.
    c.sh("cp /etc/jctotp/config.yaml /tmp/broken.yaml && dpkg --purge pam-jctotp && "
         "mkdir -p /etc/jctotp && cp /tmp/broken.yaml /etc/jctotp/config.yaml")
    fresh = c.sh("apt-get install -y -q --no-install-recommends "
                 f"-o Dpkg::Options::=--force-confold /pkg/{deb.name}")
    said = fresh.stdout + fresh.stderr  # apt passes dpkg's stderr on to its stdout
    assert "WARNING: jctotpd is NOT running" in said, said
    assert c.sh("systemctl is-active jctotpd", ok=False).stdout.strip() != "active"


DAEMON_HANDLES_SIGHUP = any("SIGHUP" in p.read_text()
                            for p in (REPO / "pam_jctotp").rglob("*.py"))


@pytest.mark.docker
@pytest.mark.xfail(not DAEMON_HANDLES_SIGHUP, strict=True,
                   reason="needs the daemon's SIGHUP handler (issue 12 bug 3, daemon side)")
def test_systemd_reload_and_logrotate_keep_the_daemon(systemd_container, deb):
    c = systemd_container
    pid = install_and_wait(c, deb)
    c.sh("systemctl reload jctotpd")
    c.sh("sleep 1")
    assert c.sh("systemctl is-active jctotpd").stdout.strip() == "active"
    assert main_pid(c) == pid
    # logrotate's postrotate signals the daemon, which reopens the audit log:
    # the next event lands in a new audit.jsonl.
    c.sh("jctotp user add alice --password-stdin --no-system-account", stdin=PASSWORD + "\n")
    c.sh("logrotate -f /etc/logrotate.d/pam-jctotp")
    c.sh("sleep 1")
    assert main_pid(c) == pid
    c.sh("jctotp user add bob --password-stdin --no-system-account", stdin=PASSWORD + "\n")
    assert '"bob"' in c.sh("cat /var/log/jctotp/audit.jsonl").stdout
    assert '"bob"' not in c.sh("cat /var/log/jctotp/audit.jsonl.1").stdout


@pytest.mark.docker
def test_systemd_pam_processes_run_in_the_unit_and_stop_with_it(systemd_container, deb):
    """pam_processes: 2 under the unit's sandbox (system call filter included): the
    child starts, serves PAM connections, is replaced after kill -9, and
    `systemctl stop` leaves no process behind."""
    c = systemd_container
    install_and_wait(c, deb)
    c.sh("echo 'pam_processes: 2' >>/etc/jctotp/config.yaml && systemctl restart jctotpd")
    child = c.sh("for i in $(seq 100); do p=$(pgrep -f pam_jctotp[.]daemon[.]processes) && "
                 "journalctl -u jctotpd | grep -q 'PAM process 1 of 2 serving' && "
                 "echo $p && exit 0; sleep 0.1; done; journalctl -u jctotpd; exit 1"
                 ).stdout.strip()
    assert "jctotpd.service" in c.sh(f"cat /proc/{child}/cgroup").stdout
    # Raw protocol HELLOs (docs/protocol.md) until both processes have answered.
    logins = ("import socket,struct\n"
              "def frame(s):\n"
              "    n=struct.unpack('!I',s.recv(4,socket.MSG_WAITALL))[0]\n"
              "    return s.recv(n,socket.MSG_WAITALL)\n"
              "for i in range(40):\n"
              "    s=socket.socket(socket.AF_UNIX); s.connect('/run/jctotp/pam.sock')\n"
              "    p=b'HELLO JCTOTP/1\\ncall=auth\\nservice=t\\nuser=nobody%d\\nrhost=\\n"
              "tty=\\nfactors=totp\\n' % i\n"
              "    s.sendall(struct.pack('!I',len(p))+p); f=frame(s)\n"
              "    if f.startswith(b'PROMPT'):\n"
              "        s.sendall(struct.pack('!I',13)+b'ANSWER 000000'); f=frame(s)\n"
              "    while not f.startswith(b'VERDICT'): f=frame(s)\n"
              "    s.close()\n")
    c.sh(f"python3 -c \"{logins}\"")
    c.sh("sleep 0.5")
    served = set(re.findall(r"jctotpd\[(\d+)\]: .*user=nobody",
                            c.sh("journalctl -u jctotpd -o short").stdout))
    assert child in served, c.sh("journalctl -u jctotpd -o short").stdout
    c.sh(f"kill -9 {child}")
    again = c.sh("for i in $(seq 100); do p=$(pgrep -f pam_jctotp[.]daemon[.]processes) && "
                 f"[ \"$p\" != {child} ] && echo $p && exit 0; sleep 0.1; done; exit 1"
                 ).stdout.strip()
    assert again and again != child
    assert c.sh("systemctl is-active jctotpd").stdout.strip() == "active"
    c.sh("systemctl stop jctotpd")
    assert c.sh("pgrep -f pam_jctotp[.]", ok=False).stdout.strip() == ""
