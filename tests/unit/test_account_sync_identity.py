"""Issue 21: the fleet's account sync (fleet/accounts.py) makes each account with the
directory's identity, and a UID clash is one error line, not one per resync."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from pam_jctotp.directory import Identity
from pam_jctotp.errors import UsageError
from pam_jctotp.fleet.accounts import SystemAccountSync


class FakeSystem:
    def __init__(self) -> None:
        self.made: dict[str, Identity | None] = {}

    def exists(self, name: str) -> bool:
        return name in self.made

    def create_account(self, name: str, identity: Identity | None = None) -> bool:
        if identity is not None and identity.uid == 1000:
            raise UsageError(f"UID 1000 of directory user {name} is already the local "
                             "account olduser's")
        self.made[name] = identity
        return True

    def update_account(self, name: str, identity: Identity) -> list[str]:
        if identity.uid == 1000:
            raise UsageError(f"UID 1000 of directory user {name} is already the local "
                             "account olduser's")
        if self.made[name] == identity:
            return []
        self.made[name] = identity
        return ["--uid"]


def rows(*names: str) -> list:
    return [SimpleNamespace(name=n) for n in names]   # the sync reads only the name


def test_accounts_take_the_directory_identity_and_a_clash_is_logged_once(tmp_path, caplog):
    ids = {"carl": Identity(20010, 20010, "/home/carl", "/bin/zsh"),
           "clash": Identity(1000, 1000)}
    system = FakeSystem()
    sync = SystemAccountSync(system, tmp_path / "system-accounts", ids.get)  # type: ignore
    with caplog.at_level(logging.ERROR, logger="jctotpd.accounts"):
        for _ in range(3):   # three resyncs
            sync(rows("carl", "clash"))
    assert system.made == {"carl": ids["carl"]}
    clash = [r for r in caplog.records if "clash" in r.getMessage()]
    assert len(clash) == 1 and "UID 1000" in clash[0].getMessage()


def test_the_directory_sync_follows_identity_changes_and_logs_a_clash_once(tmp_path, caplog):
    ids = {"carl": Identity(20010, 20010, "/home/carl", "/bin/zsh")}
    system = FakeSystem()
    sync = SystemAccountSync(system, tmp_path / "system-accounts", ids.get)  # type: ignore
    sync.follow({"carl"}, update=True)
    ids["carl"] = Identity(20011, 20010, "/home/carl", "/bin/zsh")   # renumbered there
    with caplog.at_level(logging.INFO, logger="jctotpd.accounts"):
        sync.follow({"carl"}, update=True)
        assert system.made["carl"] == ids["carl"]
        ids["carl"] = Identity(1000, 20010)                          # now a clash
        for _ in range(3):
            sync.follow({"carl"}, update=True)
    assert system.made["carl"].uid == 20011                          # kept, not renumbered
    assert [r.getMessage() for r in caplog.records if "updated" in r.getMessage()] == [
        "system account carl updated from the directory (uid)"]
    assert len([r for r in caplog.records if "UID 1000" in r.getMessage()]) == 1
