"""directory/offline.py (issue 21): break_glass_group's password verifiers, used only
while the directory raises DirectoryUnavailable (the LDAP tier runs it against slapd)."""

from __future__ import annotations

import os

import pytest

from pam_jctotp.config import PasswordHashParams
from pam_jctotp.directory.local import Passwords
from pam_jctotp.directory.offline import OfflineDirectory, Verifiers
from pam_jctotp.errors import DirectoryUnavailable
from pam_jctotp.secret import Secret


class FakeLdap:
    editable, provisions = False, True

    def __init__(self) -> None:
        self.passwords = {"ops": "right", "carl": "right"}
        self.down = False

    def verify_password(self, name, password):
        if self.down:
            raise DirectoryUnavailable("slapd stopped")
        return name in self.passwords and self.passwords[name] == password.reveal()

    def exists(self, name):
        if self.down:
            raise DirectoryUnavailable("slapd stopped")
        return name in self.passwords

    def groups_of(self, name):
        if self.down:
            raise DirectoryUnavailable("slapd stopped")
        return frozenset({"ldap-group"})


class FakeNss:
    def __init__(self) -> None:
        self.members = {"ops"}

    def groups_of(self, name):
        return frozenset({"bg"} if name in self.members else set())


@pytest.fixture
def world(tmp_path):
    now = [1000.0]
    ldap, nss, audited = FakeLdap(), FakeNss(), []
    verifiers = Verifiers(tmp_path / "v", Passwords(PasswordHashParams()), wall=lambda: now[0])
    directory = OfflineDirectory(ldap, verifiers, nss, "bg", max_age=lambda: 600,
                                 audit=lambda e, u, **f: audited.append((e, u, f)))
    return directory, ldap, nss, now, audited, tmp_path / "v"


def test_only_members_get_a_verifier_and_only_while_the_directory_is_down(world):
    directory, ldap, nss, now, audited, folder = world
    assert directory.verify_password("ops", Secret("right"))
    assert directory.verify_password("carl", Secret("right"))
    assert (folder / "ops").exists() and not (folder / "carl").exists()
    assert os.stat(folder / "ops").st_mode & 0o777 == 0o600
    ldap.passwords["ops"] = "new"                     # the directory answers: it decides
    assert not directory.verify_password("ops", Secret("right"))
    assert audited == []
    ldap.down = True
    assert directory.verify_password("ops", Secret("right"))        # the verifier
    assert not directory.verify_password("ops", Secret("wrong"))    # a wrong password
    assert [f["outcome"] for _, _, f in audited] == ["password ok", "wrong password"]
    assert directory.exists("ops") and directory.groups_of("ops") == frozenset({"bg"})
    for call in (lambda: directory.verify_password("carl", Secret("right")),
                 lambda: directory.verify_password(None, Secret("right")),
                 lambda: directory.exists("carl"), lambda: directory.groups_of("carl")):
        with pytest.raises(DirectoryUnavailable):
            call()


def test_a_verifier_past_its_age_or_a_member_gone_serves_nobody(world):
    directory, ldap, nss, now, audited, folder = world
    assert directory.verify_password("ops", Secret("right"))
    ldap.down = True
    now[0] += 601
    with pytest.raises(DirectoryUnavailable):
        directory.verify_password("ops", Secret("right"))
    assert audited[-1][0] == "break_glass_refused"
    now[0] -= 601
    nss.members.clear()                               # left the local group
    with pytest.raises(DirectoryUnavailable):
        directory.verify_password("ops", Secret("right"))
    ldap.down = False
    assert directory.verify_password("ops", Secret("right"))   # answers: verifier removed
    assert not (folder / "ops").exists()
