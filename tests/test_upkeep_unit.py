"""Unit tests of what scheduler.keep lets go (choose_prunable, check_keep): pure, no I/O."""

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest

import scheduler
from scheduler import Keep, RunFolder

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def run(name: str, age_days: float, finished: bool = True, points: Tuple[str, ...] = (),
        sweep: bool = False, started: Optional[datetime] = None) -> RunFolder:
    return RunFolder(Path("/o") / name, started or NOW - timedelta(days=age_days), finished,
                     tuple(Path("/o") / p for p in points), sweep)


def going(runs: List[RunFolder], keep: Keep, protected: Tuple[str, ...] = ()) -> List[str]:
    chosen = scheduler.choose_prunable(runs, keep, NOW, [Path("/o") / p for p in protected])
    return [r.path.name for r in chosen]


RUNS = [run("a", 30), run("b", 20), run("c", 10), run("d", 1)]


@pytest.mark.parametrize("keep, expected", [
    (Keep(), []),
    (Keep(runs=2), ["a", "b"]),
    (Keep(days=15), ["a", "b"]),
    (Keep(runs=1, days=15), ["a", "b"]),  # c is young: either limit keeps a run
    (Keep(runs=3, days=5), ["a"]),
    (Keep(runs=10), []),
])
def test_limits_keep_the_union_of_newest_and_young(keep: Keep, expected: List[str]) -> None:
    assert going(RUNS, keep) == expected


def test_protected_unfinished_and_undated_runs_stay_and_do_not_count() -> None:
    runs = RUNS + [run("killed", 40, finished=False), RunFolder(Path("/o/undated"), None, True)]
    assert going(runs, Keep(runs=1), protected=("b",)) == ["a", "c"]


def test_a_kept_run_keeps_the_chain_it_points_to() -> None:
    runs = [run("origin", 30), run("middle", 20, points=("origin",)), run("other", 15),
            run("now", 0, points=("middle/data",))]
    assert going(runs, Keep(runs=1)) == ["other"]


def test_a_pointer_into_a_sweep_keeps_the_whole_sweep_and_sweeps_count_apart() -> None:
    runs = [run("s1", 50, sweep=True), run("s2", 40, sweep=True), run("s3", 30, sweep=True),
            run("r1", 60), run("now", 0, points=("s1/3",))]
    assert going(runs, Keep(runs=1)) == ["r1", "s2"]  # oldest first


@pytest.mark.parametrize("raw, problems", [
    (None, 0), ({"runs": None, "days": None}, 0), ({"runs": 3, "days": 1.5}, 0),
    ({"runs": 0}, 1), ({"runs": True}, 1), ({"runs": 2.5}, 1), ({"days": 0}, 1),
    ({"days": "soon"}, 1), ({"days": float("inf")}, 1), ({"weeks": 2}, 1), (5, 1),
])
def test_check_keep(raw: Any, problems: int) -> None:
    found = scheduler.check_keep(raw)
    assert len(found) == problems, found
    assert all(problem.startswith("scheduler: keep") for problem in found)


def test_parse_started_reads_summary_times() -> None:
    assert scheduler.parse_started("2026-12-01T14:08:23.060+01:00") == datetime(
        2026, 12, 1, 13, 8, 23, 60000, tzinfo=timezone.utc)
    assert scheduler.parse_started(None) is None and scheduler.parse_started("soon") is None
    naive = scheduler.parse_started("2026-12-01T14:08:23")
    assert naive is not None and naive.tzinfo is not None  # taken as local time
