"""bench/verify_rate.py's open loop: the schedule its latencies are measured from.

The open loop's p99 is only honest if the logins start on the offered schedule:
R per second, evenly spaced, every one of them dealt to exactly one client
process, none before the start nor at or after the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import verify_rate  # noqa: E402


@pytest.mark.parametrize(("rate", "procs", "seconds"), [(3000, 2, 6.0), (500, 3, 1.0), (7, 2, 0.5)])
def test_the_processes_share_one_evenly_spaced_schedule(rate: float, procs: int,
                                                        seconds: float) -> None:
    start = 1000.0
    parts = [verify_rate.arrivals(rate, procs, i, start, start + seconds) for i in range(procs)]
    merged = sorted(t for part in parts for t in part)
    assert len(merged) == sum(len(p) for p in parts) == round(rate * seconds + 0.4999)
    assert merged == pytest.approx([start + k / rate for k in range(len(merged))])
    assert merged[0] == start and merged[-1] < start + seconds
    for part in parts:   # round-robin: each process's own starts are procs / rate apart
        gaps = {round(b - a, 9) for a, b in zip(part, part[1:], strict=False)}
        assert gaps <= {round(procs / rate, 9)}


def test_an_empty_window_schedules_nothing() -> None:
    assert verify_rate.arrivals(1000, 2, 0, 5.0, 5.0) == []
    assert verify_rate.arrivals(1000, 2, 1, 5.0, 4.0) == []


def test_connections_are_dealt_over_the_processes() -> None:
    assert verify_rate.slot_counts(50, 2) == [25, 25]
    assert verify_rate.slot_counts(50, 3) == [17, 17, 16]
    assert sum(verify_rate.slot_counts(7, 4)) == 7


def test_rates_are_a_comma_list_of_positive_numbers() -> None:
    assert verify_rate.parse_rates("500,1000,1500") == [500.0, 1000.0, 1500.0]
    assert verify_rate.parse_rates("3000") == [3000.0]
    for bad in ("", "0", "500,-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            verify_rate.parse_rates(bad)
