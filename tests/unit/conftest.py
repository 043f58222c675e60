"""Fixtures of the unit tier: a sans-I/O World per test (see harness.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import World  # noqa: E402


@pytest.fixture
def make_world(tmp_path_factory) -> Iterator[Callable[..., World]]:
    """make_world(max_attempts=3, groups={"bob": frozenset({"ops"})})."""
    made: list[World] = []

    def make(groups: dict[str, frozenset[str]] | None = None, **overrides: Any) -> World:
        w = World(tmp_path_factory.mktemp("world"), overrides, groups or {})
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


@pytest.fixture
def world(make_world) -> World:
    return make_world()
