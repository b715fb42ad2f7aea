"""Unit tests of the pure parts of sweeps: job keys, Hydra's job list, matching, planning."""

from pathlib import Path
from typing import Any, Dict, List

import pytest

import scheduler


@pytest.mark.parametrize("overrides, key", [
    (["b=1", "a=2"], ("a=2", "b=1")),  # the order on the command line does not matter
    (["a=1", "scheduler.resume=True"], ("a=1",)),
    (["+scheduler.fail_fast=true", "a=1"], ("a=1",)),
    (["scheduler.resume_x=1"], ("scheduler.resume_x=1",)),  # only the exact key
    ([], ()),
])
def test_job_key_leaves_out_sweep_control(overrides: List[str], key: tuple) -> None:
    assert scheduler.job_key(overrides) == key


def test_expand_sweep_numbers_jobs_as_hydras_basic_sweeper_does() -> None:
    assert scheduler.expand_sweep(["a=1,2", "b=x", "c=3,4"]) == [
        ["a=1", "b=x", "c=3"], ["a=1", "b=x", "c=4"],
        ["a=2", "b=x", "c=3"], ["a=2", "b=x", "c=4"]]
    assert scheduler.expand_sweep([]) == [[]]
    assert scheduler.expand_sweep(["a=glob(*)"]) is None  # needs Hydra's config loader


def sweep_summary(*jobs: List[str]) -> Dict[str, Any]:
    return {"jobs": [{"number": n, "overrides": job, "status": "failed"}
                     for n, job in enumerate(jobs)]}


def test_a_job_is_matched_by_its_overrides_not_its_number() -> None:
    before = sweep_summary(["a=2"], ["a=1"])
    entry, problems = scheduler.match_sweep_job(
        before, Path("/s"), [["a=1", "scheduler.resume=True"], ["a=2", "scheduler.resume=True"]],
        ["a=1", "scheduler.resume=True"])
    assert problems == [] and entry is not None and entry["number"] == 1


@pytest.mark.parametrize("jobs", [[["a=1"]], [["a=1"], ["a=2"], ["a=3"]], [["a=1"], ["a=4"]]])
def test_another_set_of_jobs_is_refused_showing_both(jobs: List[List[str]]) -> None:
    entry, [problem] = scheduler.match_sweep_job(
        sweep_summary(["a=1"], ["a=2"]), Path("/s/old"), jobs, ["a=1"])
    assert entry is None
    assert "/s/old" in problem and "the newest sweep's jobs: a=1; a=2" in problem
    assert "this sweep's jobs:       " + "; ".join(j[0] for j in jobs) in problem


def test_with_no_job_list_only_this_job_must_match() -> None:
    before = sweep_summary(["a=1"], ["a=2"])
    assert scheduler.match_sweep_job(before, Path("/s"), None, ["a=2"])[0] is not None
    assert scheduler.match_sweep_job(before, Path("/s"), None, ["a=3"])[0] is None


def planned(*names: str) -> List[Any]:
    return [scheduler.PlannedStep(i, name, scheduler.Step(script="x.py"), ["x"], f"0{i}.log")
            for i, name in enumerate(names, start=1)]


def test_a_job_that_succeeded_is_reused_whole_and_runs_nothing() -> None:
    steps = planned("a", "b", "c")
    earlier = {"status": "succeeded", "steps": [
        {"name": "a", "status": "succeeded", "reused_from": "/first/0"},
        {"name": "b", "status": "succeeded"}, {"name": "c", "status": "skipped"}]}
    source = scheduler.ResumeFrom((Path("/second/0"), earlier), reuse="/second/0")
    plan, problems = scheduler.plan_job(steps, scheduler.SchedulerOptions(resume=True),
                                        Path("/third/0"), source, Path("/out"))
    assert problems == [] and plan is not None
    assert plan.selected == [] and not plan.nothing_to_resume
    assert plan.reused == {1: "/first/0", 2: "/second/0"}  # c was skipped there: still is


def test_a_job_that_never_ran_runs_from_the_start() -> None:
    steps = planned("a", "b")
    plan, problems = scheduler.plan_job(steps, scheduler.SchedulerOptions(resume=True),
                                        Path("/r"), scheduler.ResumeFrom(fresh=True), Path("/o"))
    assert problems == [] and plan is not None
    assert [p.name for p in plan.selected] == ["a", "b"] and plan.reused == {}


def test_a_refused_resume_plans_nothing() -> None:
    plan, problems = scheduler.plan_job(planned("a"), scheduler.SchedulerOptions(resume=True),
                                        Path("/r"), scheduler.ResumeFrom(problems=("no",)),
                                        Path("/o"))
    assert (plan, problems) == (None, ["no"])


@pytest.mark.parametrize("job, tasks", [
    ("11_3", ["11_3"]), ("11", ["11"]), ("11_[2-4]", ["11_2", "11_3", "11_4"]),
    ("11_[1,3-4]", ["11_1", "11_3", "11_4"]),
])
def test_array_tasks_expands_squeues_pending_rows(job: str, tasks: List[str]) -> None:
    assert scheduler.array_tasks(job) == tasks
