"""End to end: a sweep's own summary.json, multirun/latest, resume of a sweep, fail_fast.

A multirun (`-m`) leaves <sweep>/summary.json, written by the launching process from what
each job left in <sweep>/<n>/: the sweep's status and exit code and, per job, its number,
overrides, run folder, status, exit code and failed step. `-m <same overrides>
scheduler.resume=true` resumes the newest sweep, job by job, into a new sweep folder.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import (
    PROMPT,
    finish,
    load_json,
    read_until,
    run_scheduler,
    scheduler_command,
    scheduler_env,
    terminal_text,
)

pytestmark = pytest.mark.e2e

# Three steps; train fails (exit 3) the first `fail_times` times it runs, counted per job in
# train-<fail_times>.count; prepare counts its runs in prepare-<fail_times>.count.
CONFIG = """\
steps:
  - script: tasks/fate.py
    name: prepare
    arguments: {fail_times: 0, marker: "prepare-${steps.1.arguments.fail_times}.count"}
  - script: tasks/fate.py
    name: train
    arguments: {fail_times: 0, exit_code: 3, marker: "train-${steps.1.arguments.fail_times}.count"}
  - script: tasks/fate.py
    name: report
    arguments: {print: done}
scheduler: {on_failure: abort, resume: false, fail_fast: false, dry_run: false}
"""
SWEEP = "steps.1.arguments.fail_times=0,1"
RESUME = "scheduler.resume=true"


def sweeps(project: Path) -> List[Path]:
    """Return the project's sweep folders, oldest first (multirun/latest left out)."""
    return sorted(path.parent for path in project.glob("multirun/*/*/multirun.yaml")
                  if path.parent.parent.name != "latest")


def count(project: Path, name: str) -> int:
    """Return how many times a step counted itself in <project>/<name>.count (0: never)."""
    marker = project / f"{name}.count"
    return int(marker.read_text()) if marker.exists() else 0


def jobs(summary: Dict[str, Any]) -> List[Dict[str, Any]]:
    return list(summary["jobs"])


def assert_latest(link: Path, target: Path) -> None:
    assert link.is_symlink(), f"{link} is not a symlink"
    assert not os.path.isabs(os.readlink(link)), os.readlink(link)
    assert link.resolve() == target.resolve()


def test_a_sweep_records_every_job_and_links_multirun_latest(make_project: Any) -> None:
    project = make_project(CONFIG).resolve()
    result = run_scheduler(project, "-m", SWEEP)
    assert result.returncode == 3, result.stdout + result.stderr
    [sweep] = sweeps(project)
    summary = load_json(sweep / "summary.json")
    assert (summary["status"], summary["exit_code"]) == ("failed", 3)
    assert summary["started"] and summary["finished"]
    assert jobs(summary) == [
        {"number": 0, "overrides": ["steps.1.arguments.fail_times=0"],
         "run_dir": str(sweep / "0"), "status": "succeeded", "exit_code": 0,
         "failed_step": None},
        {"number": 1, "overrides": ["steps.1.arguments.fail_times=1"],
         "run_dir": str(sweep / "1"), "status": "failed", "exit_code": 3,
         "failed_step": "train"},
    ]
    assert_latest(project / "multirun" / "latest", sweep)
    assert not (project / "outputs" / "latest").exists()  # no plain run yet

    plain = run_scheduler(project)
    assert plain.returncode == 0, plain.stderr
    [run] = [path.parent for path in project.glob("outputs/*/*/summary.json")]
    second = run_scheduler(project, "-m", "steps.2.arguments.print=a,b")
    assert second.returncode == 0, second.stderr
    newest = sweeps(project)[-1]
    assert newest != sweep
    assert load_json(newest / "summary.json")["status"] == "succeeded"
    assert_latest(project / "multirun" / "latest", newest)
    assert_latest(project / "outputs" / "latest", run)  # the newest plain run, not a job


def test_a_resumed_sweep_runs_only_the_failed_job_from_its_failed_step(make_project: Any) -> None:
    project = make_project(CONFIG).resolve()
    assert run_scheduler(project, "-m", SWEEP).returncode == 3
    [first] = sweeps(project)
    before = (first / "summary.json").read_text()

    result = run_scheduler(project, "-m", SWEEP, RESUME)
    assert result.returncode == 0, result.stdout + result.stderr
    second = sweeps(project)[-1]
    assert second != first
    assert (first / "summary.json").read_text() == before  # nothing overwritten
    summary = load_json(second / "summary.json")
    assert (summary["status"], summary["exit_code"]) == ("succeeded", 0)
    assert [(job["number"], job["status"], job.get("reused_from")) for job in jobs(summary)] == [
        (0, "succeeded", str(first / "0")), (1, "succeeded", None)]
    # Job 0 ran nothing; job 1 ran train and report only.
    assert (count(project, "prepare-0"), count(project, "train-0")) == (1, 1)
    assert (count(project, "prepare-1"), count(project, "train-1")) == (1, 2)
    assert not list((second / "0").glob("0?-*.log"))  # no step log
    job1 = load_json(second / "1" / "summary.json")
    assert [(s["name"], s["status"], s["attempts"], s.get("reused_from"))
            for s in job1["steps"]] == [
        ("prepare", "succeeded", 0, str(first / "1")),
        ("train", "succeeded", 1, None), ("report", "succeeded", 1, None)]

    # Resuming the resumed sweep: every job reused, from the folder where it succeeded.
    again = run_scheduler(project, "-m", SWEEP, RESUME)
    assert again.returncode == 0, again.stdout + again.stderr
    third = load_json(sweeps(project)[-1] / "summary.json")
    assert [job.get("reused_from") for job in jobs(third)] == [str(first / "0"), str(second / "1")]
    assert (count(project, "train-0"), count(project, "train-1")) == (1, 2)


def test_a_resume_with_other_overrides_is_refused_with_both_sets(make_project: Any) -> None:
    project = make_project(CONFIG).resolve()
    assert run_scheduler(project, "-m", SWEEP).returncode == 3
    [first] = sweeps(project)
    result = run_scheduler(project, "-m", "steps.1.arguments.fail_times=0,2", RESUME)
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(first) in result.stderr
    assert ("the newest sweep's jobs: steps.1.arguments.fail_times=0; "
            "steps.1.arguments.fail_times=1") in result.stderr
    assert ("this sweep's jobs:       steps.1.arguments.fail_times=0; "
            "steps.1.arguments.fail_times=2") in result.stderr
    assert "Traceback" not in result.stderr
    assert (count(project, "prepare-0"), count(project, "prepare-2")) == (1, 0)
    refused = load_json(sweeps(project)[-1] / "summary.json")
    assert refused["exit_code"] == 2
    assert [job["status"] for job in jobs(refused)] == ["failed", "not_run"]
    # The refused sweep does not count as the newest: the right resume still works.
    assert run_scheduler(project, "-m", SWEEP, RESUME).returncode == 0
    assert count(project, "train-1") == 2


def test_a_resume_with_no_earlier_sweep_is_a_config_error(make_project: Any) -> None:
    project = make_project(CONFIG).resolve()
    assert run_scheduler(project).returncode == 0  # a plain run is no sweep to resume
    result = run_scheduler(project, "-m", SWEEP, RESUME)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no earlier sweep" in result.stderr
    assert count(project, "prepare-1") == 0


# Job b's train waits for <project>/go-b.txt: the sweep can be killed while it runs.
WAITING = """\
steps:
  - script: tasks/fate.py
    name: prepare
    arguments: {fail_times: 0, marker: "prepare-${steps.1.arguments.print}.count"}
  - script: tasks/fate.py
    name: train
    arguments: {print: x, wait_for: "go-${steps.1.arguments.print}.txt",
                record: "train-${steps.1.arguments.print}.json"}
scheduler: {on_failure: abort, resume: false, fail_fast: false, dry_run: false}
"""


def test_a_sweep_killed_midway_tells_the_truth_and_resumes(make_project: Any) -> None:
    project = make_project(WAITING).resolve()
    (project / "go-a.txt").write_text("")
    sweep_args = ("-m", "steps.1.arguments.print=a,b,c")
    proc = subprocess.Popen(scheduler_command(project, *sweep_args), cwd=project.parent,
                            env=scheduler_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        record = project / "train-b.json"  # job 1 (b) has started train, which waits
        deadline = time.monotonic() + 60
        while not record.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        time.sleep(0.5)
        proc.kill()  # kill -9: nothing of crude-link's gets to clean up
        proc.wait(timeout=10)
        step = load_json(project / "train-b.json")["pid"]
        os.kill(step, signal.SIGKILL)  # its own session: it outlived the scheduler
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
    [sweep] = sweeps(project)
    killed = load_json(sweep / "summary.json")
    assert killed["status"] == "running"
    # As of the last change the launching process saw: job 1 had started, job 2 had not.
    assert [job["status"] for job in jobs(killed)] == ["succeeded", "running", "not_run"]
    steps = load_json(sweep / "1" / "summary.json")["steps"]
    assert [s["status"] for s in steps] == ["succeeded", "running"]

    for name in ("b", "c"):
        (project / f"go-{name}.txt").write_text("")
    time.sleep(1)  # a new second: a new sweep folder
    result = run_scheduler(project, *sweep_args, RESUME)
    assert result.returncode == 0, result.stdout + result.stderr
    resumed = load_json(sweeps(project)[-1] / "summary.json")
    assert [(job["status"], job.get("reused_from")) for job in jobs(resumed)] == [
        ("succeeded", str(sweep / "0")), ("succeeded", None), ("succeeded", None)]
    assert [count(project, f"prepare-{name}") for name in "abc"] == [1, 1, 1]
    job1 = load_json(sweeps(project)[-1] / "1" / "summary.json")
    assert [(s["status"], s["attempts"]) for s in job1["steps"]] == [
        ("succeeded", 0), ("succeeded", 1)]


def test_sigterm_to_a_sweep_records_it_interrupted(make_project: Any) -> None:
    project = make_project(WAITING).resolve()
    proc = subprocess.Popen(scheduler_command(project, "-m", "steps.1.arguments.print=a,b"),
                            cwd=project.parent, env=scheduler_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        read_until(proc.stdout.fileno(), b"waiting\n", timeout=40)  # job 0, in train
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143
    [sweep] = sweeps(project)
    summary = load_json(sweep / "summary.json")
    assert (summary["status"], summary["exit_code"]) == ("interrupted", 143)
    assert summary["finished"]
    assert [(job["status"], job["failed_step"]) for job in jobs(summary)] == [
        ("interrupted", "train"), ("not_run", None)]


# ── fail_fast, and abort at the dialog ───────────────────────────────────


def test_fail_fast_starts_no_job_after_the_first_failed_one(make_project: Any) -> None:
    project = make_project(CONFIG).resolve()
    result = run_scheduler(project, "-m", "steps.1.arguments.fail_times=1,0",
                           "scheduler.fail_fast=true")
    assert result.returncode == 3, result.stdout + result.stderr
    [sweep] = sweeps(project)
    summary = load_json(sweep / "summary.json")
    assert (summary["status"], summary["exit_code"]) == ("failed", 3)
    assert [(job["number"], job["status"], job["failed_step"]) for job in jobs(summary)] == [
        (0, "failed", "train"), (1, "not_run", None)]
    assert not (sweep / "1").exists()
    assert count(project, "prepare-0") == 0  # job 1 (fail_times=0) never started
    assert "fail_fast" in result.stderr


def test_without_fail_fast_every_job_runs(make_project: Any) -> None:
    project = make_project(CONFIG).resolve()
    result = run_scheduler(project, "-m", "steps.1.arguments.fail_times=1,0")
    assert result.returncode == 3, result.stdout + result.stderr
    summary = load_json(sweeps(project)[0] / "summary.json")
    assert [job["status"] for job in jobs(summary)] == ["failed", "succeeded"]


def test_abort_at_a_jobs_dialog_aborts_the_sweep(make_project: Any, spawn_scheduler: Any) -> None:
    project = make_project(CONFIG).resolve()
    child = spawn_scheduler(project, "-m", "steps.1.arguments.fail_times=1,0",
                            "scheduler.on_failure=ask")
    child.expect(PROMPT)
    child.sendline("a")
    assert finish(child) == 3, terminal_text(child)
    [sweep] = sweeps(project)
    summary = load_json(sweep / "summary.json")
    assert (summary["status"], summary["exit_code"]) == ("aborted", 3)
    assert [job["status"] for job in jobs(summary)] == ["aborted", "not_run"]
    assert count(project, "prepare-0") == 0  # the next job never started


def test_the_sweep_summary_is_valid_json_with_a_job_per_planned_job(make_project: Any) -> None:
    """A dry run runs no step, but the sweep still records its jobs (all succeeded)."""
    project = make_project(CONFIG).resolve()
    result = run_scheduler(project, "-m", SWEEP, "scheduler.dry_run=true")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((sweeps(project)[0] / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert [(job["number"], job["status"]) for job in jobs(summary)] == [
        (0, "succeeded"), (1, "succeeded")]


# ── submitit_local: jobs in processes of their own ───────────────────────

LOCAL = "hydra/launcher=submitit_local"


def test_a_submitit_local_sweep_is_recorded_names_its_output_and_resumes(
        make_project: Any) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    project = make_project(CONFIG).resolve()
    result = run_scheduler(project, "-m", LOCAL, SWEEP)
    assert result.returncode == 3, result.stdout + result.stderr
    [sweep] = sweeps(project)
    summary = load_json(sweep / "summary.json")
    assert (summary["status"], summary["exit_code"]) == ("failed", 3)
    assert [(job["number"], job["status"], job["exit_code"], job["failed_step"])
            for job in jobs(summary)] == [(0, "succeeded", 0, None), (1, "failed", 3, "train")]
    # Each job's output file: submitit's, in .submitit/<pid>/, named in the summary and report.
    output = {job["number"]: job["output"] for job in jobs(summary)}
    for files in output.values():
        assert [Path(f).name.split("_", 1)[1] for f in files] == ["0_log.err", "0_log.out"]
        assert Path(files[0]).parent.parent == sweep / ".submitit"
    assert output[0] != output[1]
    assert "▶ [2/3] train" in Path(output[1][1]).read_text()
    lines = result.stderr.splitlines()
    assert lines[-3:] == [
        f"  job 1 (steps.1.arguments.fail_times=1): failed, exit code 3; "
        f"{sweep / '1' / 'summary.json'}",
        f"    output: {output[1][0]}", f"    output: {output[1][1]}"], result.stderr
    assert_latest(project / "multirun" / "latest", sweep)

    resumed = run_scheduler(project, "-m", LOCAL, SWEEP, RESUME)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    second = load_json(sweeps(project)[-1] / "summary.json")
    assert [(job["status"], job.get("reused_from")) for job in jobs(second)] == [
        ("succeeded", str(sweep / "0")), ("succeeded", None)]
    assert [count(project, name) for name in ("prepare-0", "train-0", "prepare-1", "train-1")] \
        == [1, 1, 1, 2]


def test_a_sweep_folder_of_the_users_own_gets_no_sweep_summary(
        make_project: Any, tmp_path: Path) -> None:
    """crude-link cannot find such a folder again at the end: a record of it would stay
    `running` for good, so there is none (the jobs keep their own)."""
    project = make_project(CONFIG).resolve()
    mine = tmp_path / "mine"
    result = run_scheduler(project, "-m", SWEEP, f"hydra.sweep.dir={mine}")
    assert result.returncode == 3, result.stdout + result.stderr
    assert not (mine / "summary.json").exists()
    assert load_json(mine / "1" / "summary.json")["status"] == "failed"
    assert not (project / "multirun").exists()
