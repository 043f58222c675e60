"""The break-glass copy (fleet/breakglass.py): what the refresh keeps and drops, and
its maximum age (break_glass_max_age, issue 20 item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pam_jctotp.audit import AuditLog
from pam_jctotp.errors import StoreUnavailable
from pam_jctotp.fleet.breakglass import MATCHED, BreakGlassStore, refresh, write_matched
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


class Down:
    """A fleet database that does not answer."""

    def __getattr__(self, attr: str):
        def call(*args, **kwargs):
            raise StoreUnavailable("fleet database down")
        return call


def glass(tmp_path: Path, matched: float | None, now: list[float], audit: list):
    copy = SqliteStore(tmp_path / "break-glass.db")
    refresh(copy, fleet_rows(tmp_path, "ops"), lambda name: True)
    stamp = tmp_path / MATCHED
    if matched is not None:
        write_matched(stamp, matched)
    log = AuditLog(str(tmp_path / "audit.jsonl"), use_syslog=False)

    def write(event: str, user: str | None = None, **fields) -> bool:
        audit.append((event, user))
        return log.write(event, user, **fields)   # a real sink: it knows its events
    return BreakGlassStore(Down(), copy, stamp, max_age=3600, wall=lambda: now[0], audit=write)


@pytest.mark.parametrize("age, served", [(0, True), (3600, True), (3601, False)])
def test_a_copy_serves_up_to_its_maximum_age(tmp_path: Path, age: int, served: bool,
                                             caplog: pytest.LogCaptureFixture) -> None:
    now, audit = [50_000.0], []
    store = glass(tmp_path, now[0] - age, now, audit)
    if served:
        assert store.get("ops").name == "ops"
        assert store.reserve_attempt("ops", now[0], 60, 5) == 1
        assert audit == []
        return
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            store.get("ops")
    with pytest.raises(StoreUnavailable):
        store.reserve_attempt("ops", now[0], 60, 5)   # no counter moves either
    assert audit == [("break_glass_refused", "ops")] * 4
    lines = [r.getMessage() for r in caplog.records if "break_glass_max_age" in r.getMessage()]
    assert len(lines) == 1 and "3601 s ago" in lines[0], lines


def test_a_copy_that_never_said_when_it_matched_serves_nobody(tmp_path: Path) -> None:
    audit: list = []
    store = glass(tmp_path, None, [50_000.0], audit)
    with pytest.raises(StoreUnavailable):
        store.get("ops")
    assert audit == [("break_glass_refused", "ops")]


def test_the_refresh_says_when_the_copy_matched(tmp_path: Path) -> None:
    now, audit = [50_000.0], []
    store = glass(tmp_path, now[0] - 7200, now, audit)
    with pytest.raises(StoreUnavailable):
        store.get("ops")
    store.refresh(fleet_rows(tmp_path, "ops"), lambda name: True)   # the database answered
    assert store.get("ops").name == "ops"
    assert oct((tmp_path / MATCHED).stat().st_mode & 0o777) == "0o600"
