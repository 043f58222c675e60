"""Directory users appear by themselves (core/provisioning.py, issue 14), sans-I/O:
a fake directory that provisions, like LDAP, in front of the real store."""

from __future__ import annotations

import pytest
from harness import World, drive

from pam_jctotp.core import policy
from pam_jctotp.core.login import PASSWORD_PROMPT, Login
from pam_jctotp.model import LoginRequest, MfaState, VerdictCode
from pam_jctotp.secret import Secret

V = VerdictCode


class FakeLdap:
    """Users with passwords and directory groups; the store is not asked."""

    editable = False
    provisions = True

    def __init__(self, users: dict[str, tuple[str, frozenset[str]]]) -> None:
        self.users = users
        self.on_exists = lambda name: None

    def verify_password(self, name: str | None, password: Secret) -> bool:
        return name in self.users and self.users[name][0] == password.reveal()

    def set_password(self, name: str, password: Secret, old: Secret | None = None) -> None:
        raise AssertionError("not here")

    def exists(self, name: str) -> bool:
        self.on_exists(name)
        return name in self.users

    def groups_of(self, name: str) -> frozenset[str]:
        return self.users.get(name, ("", frozenset()))[1]

    def check(self, user: str | None = None) -> list[str]:
        return []

    def describe(self) -> str:
        return "fake ldap"


@pytest.fixture
def ldap(make_world) -> tuple[World, FakeLdap]:
    world = make_world(mfa_groups=["cn=mfa,ou=groups,dc=example,dc=com"],
                       admin_groups=["admins"], default_enrollment_days=5)
    fake = FakeLdap({"ann": ("ann-pass", frozenset({"cn=mfa,ou=groups,dc=example,dc=com"})),
                     "ben": ("ben-pass", frozenset()),
                     "cal": ("cal-pass", frozenset({"admins"}))})
    world.acc.directory = fake
    return world, fake


def login(world: World, fake: FakeLdap, user: str, answers) -> object:
    req = LoginRequest(call="auth", service="sshd", user=user)
    return drive(Login(world.acc, req).run(), answers, fake)


def test_an_mfa_group_member_starts_inside_the_enrollment_period(ldap):
    world, fake = ldap
    run = login(world, fake, "ann", ["ann-pass", ""])
    assert run.code == V.SUCCESS    # skipped the enrollment: days are left
    rec = world.store.get("ann")
    assert world.acc.state(rec) is MfaState.PENDING
    assert rec.enroll_deadline == pytest.approx(world.now() + 5 * policy.DAY, abs=5)
    assert "5 day(s) left" in run.text() and "by hand:" in run.text()


def test_others_start_with_mfa_off(ldap):
    world, fake = ldap
    run = login(world, fake, "ben", ["ben-pass"])
    assert run.code == V.SUCCESS and run.prompts == [PASSWORD_PROMPT]
    assert world.acc.state(world.store.get("ben")) is MfaState.OFF


def test_a_name_the_directory_does_not_know_gets_no_record(ldap):
    world, fake = ldap
    run = login(world, fake, "zed", ["whatever"])
    assert run.code == V.AUTH_ERR and run.prompts == login(world, fake, "ben", ["x"]).prompts
    assert world.store.get("zed") is None


def test_an_admin_in_an_mfa_group_gets_no_period(ldap):
    world, fake = ldap
    fake.users["dee"] = ("dee-pass", frozenset({"admins", "cn=mfa,ou=groups,dc=example,dc=com"}))
    run = login(world, fake, "dee",
                lambda prompt, _: "dee-pass" if prompt.text == PASSWORD_PROMPT else "")
    assert run.code != V.SUCCESS   # no skipping: the first login must enroll
    assert "set it up now" in run.text()
    assert world.acc.state(world.store.get("dee")) is MfaState.ENROLL_NOW


def test_the_first_wrong_password_already_counts(ldap):
    world, fake = ldap
    run = login(world, fake, "cal", ["wrong"])
    assert run.code == V.AUTH_ERR
    rec = world.store.get("cal")
    assert rec.failed_count == 1 and world.acc.limit(rec) == min(5, world.config.max_attempts)
    assert world.acc.is_admin(rec)


def test_a_parallel_first_login_finds_the_record_made_by_the_other(ldap):
    world, fake = ldap

    def other_login_first(name: str) -> None:
        if world.store.get(name) is None:
            world.store.add(name, is_admin=False, password_hash=None, now=world.now())

    fake.on_exists = other_login_first
    run = login(world, fake, "ben", ["ben-pass"])
    assert run.code == V.SUCCESS
    assert [r.name for r in world.store.list()] == ["ben"]


def test_the_local_directory_never_provisions(world):
    req = LoginRequest(call="auth", service="sshd", user="nobody-here")
    run = drive(Login(world.acc, req).run(), ["pw"], world.directory)
    assert run.code == V.AUTH_ERR and world.store.get("nobody-here") is None


def test_a_user_removed_from_the_directory_is_refused_in_account(ldap):
    world, fake = ldap
    assert login(world, fake, "ben", ["ben-pass"]).code == V.SUCCESS
    acct = LoginRequest(call="acct", service="sshd", user="ben")
    assert drive(Login(world.acc, acct).run(), [], fake).code == V.SUCCESS
    del fake.users["ben"]
    run = drive(Login(world.acc, acct).run(), [], fake)
    assert run.code == V.PERM_DENIED and "no longer in the directory" in run.text()
