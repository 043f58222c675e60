"""`jctotp doctor` against fake /etc trees (never the host's): PAM stacks,
sshd_config and its drop-ins, the clock, a broken config (issue 12); locked users
against a real jctotpd."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pam_jctotp import config
from pam_jctotp.cli import doctor
from pam_jctotp.cli.doctor import Host
from pam_jctotp.config import Config
from pam_jctotp.transport import pam_wire

DEBIAN_COMMON_AUTH = """\
auth\t[success=1 default=ignore]\tpam_unix.so nullok
auth\trequisite\t\t\tpam_deny.so
auth\trequired\t\t\tpam_permit.so
"""
PROFILE_AUTH = DEBIAN_COMMON_AUTH + "auth\trequired\t\t\tpam_jctotp.so factors=totp\n"
PROFILE_ACCOUNT = ("account\t[success=1 new_authtok_reqd=done default=ignore]\tpam_unix.so\n"
                   "account\trequisite\t\t\tpam_deny.so\naccount\trequired\t\t\tpam_permit.so\n"
                   "account\trequired\t\t\tpam_jctotp.so\n")
DEBIAN_SU = ("auth       sufficient pam_rootok.so\n@include common-auth\n"
             "@include common-account\n@include common-session\n")


def tree(root: Path, files: dict[str, str]) -> Host:
    for name, text in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Host(str(root), sshd=None, clock=None, probe_sockets=False)


def fails(findings: list[doctor.Finding]) -> list[str]:
    return [f.what for f in findings if f.level == "fail"]


def test_the_profile_with_unknown_users_refuse_is_the_su_trap(tmp_path):
    """Issue 12 bug 9: pam-auth-update --enable jctotp + unknown_users: refuse
    refuses root in su; doctor said all was well."""
    host = tree(tmp_path, {"/etc/pam.d/common-auth": PROFILE_AUTH,
                           "/etc/pam.d/common-account": PROFILE_ACCOUNT,
                           "/etc/pam.d/su": DEBIAN_SU})
    found = fails(doctor.pam_findings(Config(unknown_users="refuse"), host))
    assert len(found) == 1 and found[0].startswith("PAM service su: ")
    assert "/etc/pam.d/common-auth:4" in found[0] and "unknown_users: ignore" in found[0]
    assert fails(doctor.pam_findings(Config(unknown_users="ignore"), host)) == []


def test_password_asked_twice_under_common_auth(tmp_path):
    host = tree(tmp_path, {"/etc/pam.d/common-auth": DEBIAN_COMMON_AUTH,
                           "/etc/pam.d/sshd": "@include common-auth\n"
                                              "auth required pam_jctotp.so timeout=15\n"})
    found = fails(doctor.pam_findings(Config(), host))
    assert len(found) == 1 and "password is asked twice" in found[0]
    assert "/etc/pam.d/common-auth:1" in found[0] and "/etc/pam.d/sshd:2" in found[0]
    for fixed in ("auth required pam_jctotp.so factors=totp\n",
                  "auth required pam_jctotp.so use_first_pass\n"):
        host = tree(tmp_path, {"/etc/pam.d/sshd": "@include common-auth\n" + fixed})
        assert fails(doctor.pam_findings(Config(), host)) == []


def test_the_shipped_sshd_stack_is_clean(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    host = tree(tmp_path, {"/etc/pam.d/sshd": (repo / "packaging/pam.d/sshd").read_text(),
                           "/etc/pam.d/common-account": PROFILE_ACCOUNT.replace(
                               "account\trequired\t\t\tpam_jctotp.so\n", "")})
    found = doctor.pam_findings(Config(), host)
    assert fails(found) == [] and "PAM services using pam_jctotp: sshd" in found[-1].what


@pytest.mark.parametrize("line, delay, bad", [
    ("auth required pam_jctotp.so timeout=2", 2.0, True),
    ("auth required pam_jctotp.so timeout=3", 2.0, False),
    ("auth required pam_jctotp.so", 10.0, True),    # the shim's default timeout=10
    ("auth required pam_jctotp.so", 9.5, False),
])
def test_fail_delay_not_below_a_pam_timeout_is_flagged(tmp_path, line, delay, bad):
    """Issue 9 item 1, doctor's part: fail_delay >= timeout= of a pam_jctotp line."""
    host = tree(tmp_path, {"/etc/pam.d/sshd": line + "\n"})
    found = fails(doctor.pam_findings(Config(fail_delay=delay), host))
    assert bool(found) == bad, found
    if bad:
        assert found[0].startswith("/etc/pam.d/sshd:1: timeout=")


DEBIAN_SSHD = "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\nX11Forwarding yes\n"
OURS = (Path(__file__).resolve().parents[2] / "sshd_config.d/jctotp.conf").read_text()


def test_sshd_trap_names_the_drop_in_at_fault(tmp_path):
    """The first value wins; the finding names the file that set it."""
    host = tree(tmp_path, {"/etc/ssh/sshd_config": DEBIAN_SSHD,
                           "/etc/ssh/sshd_config.d/10-cloud.conf":
                               "# cloud image\nKbdInteractiveAuthentication no\n",
                           "/etc/ssh/sshd_config.d/50-jctotp.conf": OURS})
    found = fails(doctor.sshd_check(host))
    assert len(found) == 1, found
    assert "KbdInteractiveAuthentication no (set in " \
           "/etc/ssh/sshd_config.d/10-cloud.conf:2)" in found[0]
    (tmp_path / "etc/ssh/sshd_config.d/50-jctotp.conf").rename(
        tmp_path / "etc/ssh/sshd_config.d/00-jctotp.conf")
    assert fails(doctor.sshd_check(host)) == []


def test_sshd_trap_advice_fits_a_drop_in_already_named_00(tmp_path):
    """Ours is already 00-jctotp.conf and 00-hardening.conf still sorts first:
    "install our drop-in as 00-jctotp.conf" would send the admin in a circle."""
    host = tree(tmp_path, {"/etc/ssh/sshd_config": DEBIAN_SSHD,
                           "/etc/ssh/sshd_config.d/00-hardening.conf":
                               "KbdInteractiveAuthentication no\n",
                           "/etc/ssh/sshd_config.d/00-jctotp.conf": OURS})
    found = [f for f in fails(doctor.sshd_check(host)) if "KbdInteractive" in f]
    assert len(found) == 1, found
    assert "install our drop-in as" not in found[0]
    assert "sorts before 00-hardening.conf" in found[0]


def test_password_authentication_alarm_skipped_when_methods_exclude_it(tmp_path):
    host = tree(tmp_path, {"/etc/ssh/sshd_config": DEBIAN_SSHD,
                           "/etc/ssh/sshd_config.d/50-cloud-init.conf":
                               "PasswordAuthentication yes\n"})
    found = fails(doctor.sshd_check(host))
    assert any("PasswordAuthentication yes (set in /etc/ssh/sshd_config.d/"
               "50-cloud-init.conf:1)" in f for f in found), found
    tree(tmp_path, {"/etc/ssh/sshd_config.d/00-jctotp.conf":
                    "KbdInteractiveAuthentication yes\n"
                    "AuthenticationMethods publickey,keyboard-interactive\n"})
    assert fails(doctor.sshd_check(host)) == []


def test_sshd_defaults_are_named_as_defaults(tmp_path):
    host = tree(tmp_path, {"/etc/ssh/sshd_config": "Port 22\n"})
    found = fails(doctor.sshd_check(host))
    assert any("UsePAM no (sshd's default)" in f for f in found)
    assert any("PasswordAuthentication yes (sshd's default)" in f for f in found)


@pytest.mark.parametrize("state, how, level", [
    ("yes", "timedatectl", "ok"), ("no", "timedatectl", "fail"),
    ("no", "adjtimex(2)", "warn"), ("unknown", "nothing", "warn")])
def test_clock_sync(state, how, level):
    found = doctor.clock_findings(Host(clock=lambda: (state, how)))
    assert [f.level for f in found] == [level] and how in found[0].what
    assert "unknown" in found[0].what if state == "unknown" else True


def test_clock_sync_on_a_fleet_names_the_database_s_clock_as_the_authority():
    found = doctor.clock_findings(Host(clock=lambda: ("no", "timedatectl")), fleet=True)
    assert [f.level for f in found] == ["fail"]
    assert "database server's clock is the authority" in found[0].what, found
    assert "TOTP codes are checked against this clock" not in found[0].what, found


def test_clock_sync_says_what_it_used():
    state, how = doctor.clock_sync()
    assert state in ("yes", "no", "unknown") and how


def test_broken_config_is_a_finding_and_the_rest_still_runs(tmp_path):
    host = tree(tmp_path, {"/etc/pam.d/sshd": "auth required pam_jctotp.so\n"})
    found = doctor.run(Config(), "/etc/jctotp/config.yaml",
                       ["/etc/jctotp/config.yaml: line 2: unknown config key 'max_atempts' "
                        "(did you mean 'max_attempts'?)"], host)
    assert found[0].level == "fail" and "did you mean 'max_attempts'" in found[0].what
    assert any("PAM services using pam_jctotp: sshd" in f.what for f in found)


def _wrong_code_login(daemon, user: str, totp) -> str:
    """One sshd-style login through the PAM socket with a wrong code; the verdict frame."""
    def frame(sock: socket.socket) -> str:
        n = pam_wire.HEADER.unpack(sock.recv(4, socket.MSG_WAITALL))[0]
        return sock.recv(n, socket.MSG_WAITALL).decode()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(daemon.pam_socket)
        sock.sendall(pam_wire.frame(f"HELLO JCTOTP/1\ncall=auth\nservice=sshd\nuser={user}\n"
                                    "rhost=\ntty=ssh\nfactors=password,totp\ntimeout=10"))
        assert frame(sock).startswith("PROMPT_OFF ")
        sock.sendall(pam_wire.frame("ANSWER correct horse battery"))
        assert frame(sock).startswith("PROMPT")
        wrong = f"{(int(totp.now()) + 1) % 1000000:06d}"
        sock.sendall(pam_wire.frame(f"ANSWER {wrong}"))
        while not (reply := frame(sock)).startswith("VERDICT"):
            pass
        return reply


def test_doctor_names_a_locked_user_and_the_unlock(daemon):
    """The walkthrough (docs/walkthrough.md 5e): alice locked after wrong codes
    and doctor said nothing; `jctotp user list` was the only place to see it."""
    totp = daemon.add_user("alice")
    daemon.ok("user.set", name="alice", max_attempts=1)
    assert "MAXTRIES" in _wrong_code_login(daemon, "alice", totp) or \
        daemon.user("alice")["locked"]
    cfg = config.load_collect(daemon.config_path)[0]
    found = [f.what for f in doctor.daemon_findings(cfg) if f.level == "warn"]
    assert any("alice" in f and "locked" in f and "jctotp unlock alice" in f
               for f in found), found
    daemon.ok("unlock", names=["alice"])
    assert not any("alice" in f.what for f in doctor.daemon_findings(cfg))


def test_the_su_trap_is_one_finding_for_every_service_it_reaches(tmp_path):
    """The walkthrough (5b): one cause printed five times, once per service."""
    host = tree(tmp_path, {"/etc/pam.d/common-auth": PROFILE_AUTH,
                           "/etc/pam.d/common-account": PROFILE_ACCOUNT,
                           "/etc/pam.d/su": DEBIAN_SU, "/etc/pam.d/login": DEBIAN_SU,
                           "/etc/pam.d/sudo": DEBIAN_SU})
    found = fails(doctor.pam_findings(Config(unknown_users="refuse"), host))
    assert len(found) == 1, found
    assert found[0].startswith("PAM services login, su, sudo: ")
    assert "refused by login, su, sudo" in found[0]
