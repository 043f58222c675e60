"""Issue 21 item 6: the shipped drop-ins, parsed by Debian 12's real sshd (`sshd -T -C`,
scripts/fetch-sshd.sh unpacks it under build/sshd) behind Debian's own main file:
root and the `automation` group may use a key alone, directory users never.

sshd -T needs its privilege-separation user and /run/sshd: the test gives them in a
private mount namespace (unshare -m: a copy of /etc/passwd and /etc/group bind-mounted,
a tmpfs on /run), so the host's files are never changed. The same parse drives
`jctotp doctor`'s root check (cli/doctor/root.py), with sshd and from the files alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pam_jctotp.cli.doctor import Host
from pam_jctotp.cli.doctor import root as doctor_root

REPO = Path(__file__).resolve().parents[2]
DROPINS = REPO / "sshd_config.d"
SSHD = next((p for p in (os.environ.get("JCTOTP_TEST_SSHD", ""),
                         str(REPO / "build/sshd/usr/sbin/sshd"), "/usr/sbin/sshd")
             if p and os.access(p, os.X_OK)), None)
needs_sshd = pytest.mark.skipif(SSHD is None or os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="no sshd (bash scripts/fetch-sshd.sh), or not root")

# Debian 12's /etc/ssh/sshd_config, what matters of it: the drop-ins come first.
MAIN = """Include {dropins}/*.conf
HostKey {root}/hostkey
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def tree(tmp_path: Path, dropin: str) -> Path:
    """A host root with Debian's sshd_config and our drop-in as 00-jctotp.conf."""
    d = tmp_path / "etc/ssh/sshd_config.d"
    d.mkdir(parents=True)
    shutil.copy(DROPINS / dropin, d / "00-jctotp.conf")
    # as on the host (doctor reads it under its root), and with real paths for sshd -T
    (tmp_path / "etc/ssh/sshd_config").write_text(
        MAIN.format(root=tmp_path, dropins="/etc/ssh/sshd_config.d"))
    (tmp_path / "sshd_config").write_text(MAIN.format(root=tmp_path, dropins=d))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(tmp_path / "hostkey")], check=True)
    passwd = Path("/etc/passwd").read_text()
    group = Path("/etc/group").read_text()
    (tmp_path / "passwd").write_text(
        passwd + "sshd:x:64999:65534::/run/sshd:/usr/sbin/nologin\n"
        "robot:x:64998:64998::/nonexistent:/bin/sh\nbob:x:64997:64997::/home/bob:/bin/sh\n")
    (tmp_path / "group").write_text(group + "automation:x:64998:robot\nbob:x:64997:\n")
    return tmp_path


def effective(root: Path, user: str) -> dict[str, str]:
    script = (f"mount --make-rprivate / && mount --bind {root}/passwd /etc/passwd && "
              f"mount --bind {root}/group /etc/group && mount -t tmpfs none /run && "
              f"mkdir /run/sshd && exec {SSHD} -T -f {root}/sshd_config "
              f"-C user={user},host=client.example,addr=127.0.0.1")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return doctor_root.parse_t(done.stdout)


@needs_sshd
@pytest.mark.parametrize("dropin", ["jctotp.conf", "jctotp-key.conf"])
def test_root_and_automation_may_use_a_key_alone_directory_users_never(tmp_path, dropin):
    root = tree(tmp_path, dropin)
    for user in ("root", "robot"):
        seen = effective(root, user)
        assert doctor_root.key_alone(seen), (user, seen)
        assert seen["usepam"] == "yes" and seen["kbdinteractiveauthentication"] == "yes"
    bob = effective(root, "bob")
    assert not doctor_root.key_alone(bob), bob
    assert all("keyboard-interactive" in m for m in bob["authenticationmethods"].split())
    assert bob["passwordauthentication"] == "no"
    if dropin == "jctotp.conf":   # password + code, or key + password + code
        assert bob["authenticationmethods"] == \
            "keyboard-interactive publickey,keyboard-interactive"
    else:                         # key + code
        assert bob["authenticationmethods"] == "publickey,keyboard-interactive"


@pytest.mark.parametrize("dropin", ["jctotp.conf", "jctotp-key.conf"])
def test_doctor_reads_roots_way_in_from_the_files(tmp_path, dropin):
    root = tree(tmp_path, dropin)
    (root / "root/.ssh").mkdir(parents=True)
    (root / "root/.ssh/authorized_keys").write_text("ssh-ed25519 AAAA... admin\n")
    found = doctor_root.findings(Host(str(root), sshd=None), unknown_users="ignore")
    assert [f.level for f in found] == ["ok"], found


def test_doctor_warns_when_root_has_no_way_in(tmp_path):
    root = tree(tmp_path, "jctotp.conf")
    dropin = root / "etc/ssh/sshd_config.d/00-jctotp.conf"
    dropin.write_text(dropin.read_text().split("Match User root")[0])   # the old drop-in
    (root / "root/.ssh").mkdir(parents=True)
    (root / "root/.ssh/authorized_keys").write_text("ssh-ed25519 AAAA... admin\n")
    found = doctor_root.findings(Host(str(root), sshd=None), unknown_users="ignore")
    assert [f.level for f in found] == ["warn"], found
    assert "root" in found[0].what and "Match User root" in found[0].what


def test_doctor_warns_without_roots_authorized_keys_or_with_unknown_users_refuse(tmp_path):
    root = tree(tmp_path, "jctotp.conf")
    found = doctor_root.findings(Host(str(root), sshd=None), unknown_users="ignore")
    assert [f.level for f in found] == ["warn"] and "authorized_keys" in found[0].what
    (root / "root/.ssh").mkdir(parents=True)
    (root / "root/.ssh/authorized_keys").write_text("ssh-ed25519 AAAA... admin\n")
    found = doctor_root.findings(Host(str(root), sshd=None), unknown_users="refuse")
    assert [f.level for f in found] == ["warn"] and "unknown_users" in found[0].what

