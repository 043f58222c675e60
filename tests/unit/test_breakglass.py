"""The break-glass copy (fleet/breakglass.py): what the refresh keeps and drops."""

from __future__ import annotations

from pathlib import Path

from pam_jctotp.fleet.breakglass import refresh
from pam_jctotp.store.sqlite import SqliteStore


def fleet_rows(tmp_path: Path, *names: str) -> list:
    """The rows a fleet database would list (a SQLite store stands in for it)."""
    fleet = SqliteStore(tmp_path / f"fleet-{len(list(tmp_path.glob('fleet-*.db')))}.db")
    for n, name in enumerate(names):
        fleet.add(name, is_admin=False, password_hash=f"hash-{name}", now=1000.0 + n)
    rows = fleet.list()
    fleet.close()
    return rows


def test_refresh_drops_the_copy_of_a_member_who_left_the_group(tmp_path: Path) -> None:
    rows = fleet_rows(tmp_path, "ops1", "ops2", "dev")
    copy = SqliteStore(tmp_path / "break-glass.db")
    group = {"ops1", "ops2"}
    assert refresh(copy, rows, group.__contains__) == 2
    assert [r.name for r in copy.list()] == ["ops1", "ops2"]
    group.discard("ops2")                                 # removed from break_glass_group
    assert refresh(copy, rows, group.__contains__) == 1
    assert [r.name for r in copy.list()] == ["ops1"]
    assert copy.get("ops2") is None
    copy.close()


def test_refresh_drops_the_copy_of_a_member_gone_from_the_database(tmp_path: Path) -> None:
    copy = SqliteStore(tmp_path / "break-glass.db")
    refresh(copy, fleet_rows(tmp_path, "ops1", "ops2"), lambda name: True)
    assert refresh(copy, fleet_rows(tmp_path, "ops1"), lambda name: True) == 1
    assert [r.name for r in copy.list()] == ["ops1"]
    copy.close()
