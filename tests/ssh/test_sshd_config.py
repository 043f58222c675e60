"""The sshd_config traps, checked with sshd -T (scripts/check-sshd-config.sh)
on the image's real sshd, in a container without network."""

from __future__ import annotations

import subprocess

import pytest
from sshlib import IMAGE

CHECK = "/usr/share/jctotp/check-sshd-config.sh"
DROPINS = "/etc/ssh/sshd_config.d"


def run(image, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", IMAGE, "-c",
         "set -e; ssh-keygen -A >/dev/null; mkdir -p /run/sshd; "
         f"install -m644 /usr/share/jctotp/sshd_config.d/jctotp.conf {DROPINS}/00-jctotp.conf; "
         + script],
        capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("conf", ["jctotp.conf", "jctotp-key.conf"])
def test_our_dropins_pass_the_check(image, conf):
    r = run(image, f"install -m644 /usr/share/jctotp/sshd_config.d/{conf} "
                   f"{DROPINS}/00-jctotp.conf; {CHECK}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split()[:4] == ["usepam", "yes", "kbdinteractiveauthentication", "yes"]


def test_a_distro_dropin_sorting_after_ours_does_not_win(image):
    r = run(image, f"printf 'KbdInteractiveAuthentication no\\nPasswordAuthentication yes\\n'"
                   f" > {DROPINS}/50-cloud-init.conf; {CHECK}")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_dropin_read_before_ours_is_detected(image):
    # Ours under a name that sorts last: the distro's "no" is read first and
    # kept; our AuthenticationMethods then cannot be met and sshd refuses to
    # start (never a login without the code). Without AuthenticationMethods
    # the same trap leaves sshd running with no way to ask for the code.
    r = run(image, f"mv {DROPINS}/00-jctotp.conf {DROPINS}/zz-jctotp.conf; "
                   f"printf 'KbdInteractiveAuthentication no\\n' > {DROPINS}/10-distro.conf; "
                   f"{CHECK}")
    assert r.returncode == 2
    assert "cannot be satisfied" in r.stderr
    assert "10-distro.conf" in r.stderr  # tells where to look

    r = run(image, f"sed -i /^AuthenticationMethods/d {DROPINS}/00-jctotp.conf; "
                   f"mv {DROPINS}/00-jctotp.conf {DROPINS}/zz-jctotp.conf; "
                   f"printf 'KbdInteractiveAuthentication no\\n' > {DROPINS}/10-distro.conf; "
                   f"{CHECK}")
    assert r.returncode == 1
    assert "TRAP: KbdInteractiveAuthentication" in r.stderr


def test_password_authentication_yes_is_detected(image):
    r = run(image, f"printf 'PasswordAuthentication yes\\n' > {DROPINS}/00-cloud.conf; {CHECK}")
    assert r.returncode == 1
    assert "TRAP: PasswordAuthentication" in r.stderr


def test_methods_that_skip_the_code_are_detected(image):
    r = run(image, f"printf 'AuthenticationMethods any\\n' > {DROPINS}/00-aaa.conf; {CHECK}")
    assert r.returncode == 1
    assert "TRAP: AuthenticationMethods" in r.stderr
