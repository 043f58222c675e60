"""The tree itself: no file committed half-merged."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(rb"^(<{7} |>{7} |={7}$)", re.MULTILINE)


def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"],
                         capture_output=True, check=True).stdout
    paths = [ROOT / p.decode() for p in out.split(b"\0") if p]
    return [p for p in paths if p.is_file() and p.suffix not in {".json", ".png", ".gz"}]


def conflicted(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths if MARKER.search(p.read_bytes())]


def test_no_file_carries_merge_conflict_markers():
    assert conflicted(tracked_text_files()) == []


def test_the_check_finds_a_planted_marker(tmp_path):
    planted = ROOT / "tests" / "unit" / "_planted_conflict.txt"
    planted.write_bytes(b"a\n<<<<<<< HEAD\nb\n=======\nc\n>>>>>>> main\n")
    try:
        assert conflicted([planted]) == ["tests/unit/_planted_conflict.txt"]
    finally:
        planted.unlink()
