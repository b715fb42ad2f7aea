"""End to end on the real single-node Slurm: a sweep's summary.json, its resume, fail_fast.

`python scheduler.py -m hydra/launcher=submitit_slurm default.x=...` (the `slurm` fixture of
tests/conftest.py). The launching process writes <sweep>/summary.json from what the jobs
leave on the shared disk; `-m <same overrides> scheduler.resume=true` reruns only what
failed; `scheduler.fail_fast=true` cancels the sweep's other jobs once one has failed.
"""

import subprocess
import time
from pathlib import Path
from typing import Any, List

import pytest
from conftest import load_json, run_scheduler, scheduler_command, scheduler_env

pytestmark = pytest.mark.e2e
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

LAUNCHER = "hydra/launcher=submitit_slurm"

# x is swept (kept under default:, plain data); train fails (exit 3) the first x times it
# runs, and waits for <project>/go-<x> first; each step counts its runs per job.
CONFIG = """\
default: {x: 0}
steps:
  - script: tasks/fate.py
    name: prepare
    arguments: {fail_times: 0, marker: "prepare-${default.x}.count"}
  - script: tasks/fate.py
    name: train
    arguments: {fail_times: "${default.x}", exit_code: 3, marker: "train-${default.x}.count",
                wait_for: "go-${default.x}"}
scheduler: {on_failure: abort, resume: false, fail_fast: false}
"""


def sweeps(project: Path) -> List[Path]:
    return sorted(path.parent for path in project.glob("multirun/*/*/multirun.yaml")
                  if path.parent.parent.name != "latest")


def count(project: Path, name: str) -> int:
    marker = project / f"{name}.count"
    return int(marker.read_text()) if marker.exists() else 0


def test_a_slurm_sweep_is_recorded_and_its_resume_runs_only_the_failed_job(
        make_project: Any, slurm: Any) -> None:
    project = make_project(CONFIG).resolve()
    for x in (0, 1):
        (project / f"go-{x}").touch()
    result = run_scheduler(project, "-m", LAUNCHER, "default.x=0,1")
    assert result.returncode == 3, result.stdout + result.stderr
    [sweep] = sweeps(project)
    summary = load_json(sweep / "summary.json")
    assert (summary["status"], summary["exit_code"]) == ("failed", 3)
    assert [(job["number"], job["overrides"], job["status"], job["failed_step"])
            for job in summary["jobs"]] == [
        (0, ["default.x=0"], "succeeded", None), (1, ["default.x=1"], "failed", "train")]
    out = summary["jobs"][1]["output"]
    assert [Path(path).parent.parent for path in out] == [sweep / ".submitit"] * 2
    assert f"    Slurm output: {out[1]}" in result.stderr
    assert (project / "multirun" / "latest").resolve() == sweep

    resumed = run_scheduler(project, "-m", LAUNCHER, "default.x=0,1", "scheduler.resume=true")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    second = sweeps(project)[-1]
    assert second != sweep
    record = load_json(second / "summary.json")
    assert record["status"] == "succeeded"
    assert [(job["status"], job.get("reused_from")) for job in record["jobs"]] == [
        ("succeeded", str(sweep / "0")), ("succeeded", None)]
    assert [count(project, name) for name in ("prepare-0", "train-0", "prepare-1", "train-1")] \
        == [1, 1, 1, 2]
    steps = load_json(second / "1" / "summary.json")["steps"]
    assert [(s["name"], s["attempts"], s.get("reused_from")) for s in steps] == [
        ("prepare", 0, str(sweep / "1")), ("train", 1, None)]

    refused = run_scheduler(project, "-m", LAUNCHER, "default.x=0,2", "scheduler.resume=true")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    # Each job says why in its own output; the sweep's summary holds it too.
    assert "config error, no step was run (exit code 2)" in refused.stderr
    jobs = load_json(sweeps(project)[-1] / "summary.json")["jobs"]
    assert [job["status"] for job in jobs] == ["failed", "failed"]
    for job in jobs:
        [problem] = job["problems"]
        assert "the newest sweep's jobs: default.x=0; default.x=1" in problem, problem
        assert "this sweep's jobs:       default.x=0; default.x=2" in problem, problem
        assert "this sweep's jobs:" in Path(job["output"][0]).read_text()  # its .err
    assert count(project, "prepare-2") == 0


def test_fail_fast_on_slurm_cancels_the_sweeps_other_jobs(make_project: Any, slurm: Any) -> None:
    project = make_project(CONFIG).resolve()
    (project / "go-1").touch()  # x=1 fails at once; x=0 and x=2 wait for good
    result = run_scheduler(project, "-m", LAUNCHER, "default.x=1,0,2", "scheduler.fail_fast=true")
    assert result.returncode == 3, result.stdout + result.stderr
    [sweep] = sweeps(project)
    summary = load_json(sweep / "summary.json")
    assert (summary["status"], summary["exit_code"]) == ("failed", 3)
    jobs = summary["jobs"]
    assert (jobs[0]["status"], jobs[0]["failed_step"]) == ("failed", "train")
    for job in jobs[1:]:
        assert job["status"] in ("interrupted", "no_record"), job
        assert job["note"] == "cancelled: fail_fast=true, after job 0 failed", job
    assert count(project, "train-0") == count(project, "train-2") == 0  # never got past waiting
    assert "cancelling the sweep's" in result.stderr
    assert "Traceback" not in result.stdout


def test_a_slurm_sweep_killed_midway_is_resumed_from_where_each_job_stopped(
        make_project: Any, slurm: Any, tmp_path: Path) -> None:
    project = make_project(CONFIG).resolve()
    (project / "go-0").touch()  # job 0 ends; job 1 waits in train
    with (tmp_path / "err").open("wb") as err:
        proc = subprocess.Popen(scheduler_command(project, "-m", LAUNCHER, "default.x=0,1"),
                                cwd=project.parent, env=scheduler_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60

        def seen() -> List[str]:
            found = sweeps(project)
            summary = load_json(found[0] / "summary.json") if found and (
                found[0] / "summary.json").exists() else {}
            return [job["status"] for job in summary.get("jobs", [])]

        while seen() != ["succeeded", "running"]:
            assert time.monotonic() < deadline, (seen(), (tmp_path / "err").read_text())
            time.sleep(0.2)
        proc.kill()  # kill -9 of the launching process: its jobs go on in Slurm
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    [sweep] = sweeps(project)
    assert load_json(sweep / "summary.json")["status"] == "running"  # as last seen
    assert slurm.squeue(), "job 1 should still be running in Slurm"
    slurm.stop_jobs()  # as a user would: scancel what is left
    assert not slurm.wait_queue_empty()
    time.sleep(1)  # a new second: a new sweep folder

    (project / "go-1").touch()
    result = run_scheduler(project, "-m", LAUNCHER, "default.x=0,1", "scheduler.resume=true")
    assert result.returncode == 3, result.stdout + result.stderr  # train fails once (x=1)
    again = run_scheduler(project, "-m", LAUNCHER, "default.x=0,1", "scheduler.resume=true")
    assert again.returncode == 0, again.stdout + again.stderr
    first, second, third = sweeps(project)
    assert [(job["status"], job.get("reused_from"))
            for job in load_json(third / "summary.json")["jobs"]] == [
        ("succeeded", str(first / "0")), ("succeeded", None)]
    assert [count(project, name) for name in ("prepare-0", "prepare-1", "train-0", "train-1")] \
        == [1, 1, 1, 2]
    steps = load_json(third / "1" / "summary.json")["steps"]
    assert [(s["name"], s["attempts"], s.get("reused_from")) for s in steps] == [
        ("prepare", 0, str(first / "1")), ("train", 1, None)]
