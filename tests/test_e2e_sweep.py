"""End to end: a multirun with Hydra's own launcher (README "Sweeps on the cluster" for the
Slurm one: tests/test_e2e_sweep_slurm.py).

Every job runs under multirun/, a failed job does not stop the later ones, SIGTERM or SIGHUP
stops the sweep at the job that runs, and the sweep ends with a report of the jobs that failed
and the first one's exit code.
"""

import signal
import subprocess
from typing import Any

import pytest
from conftest import (
    kill_step_processes,
    load_json,
    make_config,
    read_until,
    run_scheduler,
    scheduler_command,
    scheduler_env,
    step_statuses,
    summaries,
    sweep_folder,
)

pytestmark = pytest.mark.e2e


SWEPT = """\
- script: tasks/fate.py
  name: swept
  arguments: {exit_code: 0, print: x, record: "${hydra:runtime.output_dir}/swept.json"}
- script: tasks/fate.py
  name: after
  arguments: {record: "${hydra:runtime.output_dir}/after.json"}
"""


SWEPT_WAITING = """\
- script: tasks/fate.py
  name: swept
  arguments: {print: x, wait_for: never.txt}
"""


def test_a_failed_multirun_job_does_not_stop_the_later_ones(make_project: Any) -> None:
    project = make_project(make_config(SWEPT))
    result = run_scheduler(project, "-m", "steps.0.arguments.exit_code=3,0")  # -m first
    assert result.returncode == 3, result.stdout + result.stderr
    jobs = summaries(project, "multirun")
    assert sorted(job.name for job in jobs) == ["0", "1"]
    by_number = {job.name: (job, summary) for job, summary in jobs.items()}
    first_dir, first = by_number["0"]
    second_dir, second = by_number["1"]
    assert load_json(first_dir / "swept.json")["args"]["exit_code"] == 3
    assert (first["status"], first["exit_code"]) == ("failed", 3)
    assert step_statuses(first) == ["failed", "not_run"]
    assert load_json(second_dir / "swept.json")["args"]["exit_code"] == 0
    assert (second["status"], second["exit_code"]) == ("succeeded", 0)
    assert (second_dir / "after.json").exists()
    assert summaries(project) == {}  # a multirun's jobs go under multirun/ only


def test_a_multirun_whose_jobs_all_succeed_exits_0(make_project: Any) -> None:
    project = make_project(make_config(SWEPT))
    result = run_scheduler(project, "steps.0.arguments.print=x,y", "--multirun")  # flag last
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = summaries(project, "multirun")
    assert len(jobs) == 2
    assert [s["status"] for s in jobs.values()] == ["succeeded"] * 2
    printed = sorted(load_json(job / "swept.json")["args"]["print"] for job in jobs)
    assert printed == ["x", "y"]


def test_a_failed_multirun_job_is_named_in_a_report_with_its_exit_code(make_project: Any) -> None:
    project = make_project(make_config(SWEPT))
    result = run_scheduler(project, "-m", "steps.0.arguments.exit_code=0,3")
    assert result.returncode == 3, result.stdout + result.stderr
    sweep = sweep_folder(project)
    assert result.stderr.splitlines()[-2:] == [
        f"crude-link: 1 of 2 job(s) failed in {sweep}:",
        f"  job 1 (steps.0.arguments.exit_code=3): failed, exit code 3; "
        f"{sweep / '1' / 'summary.json'}",
    ], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_multirun_dry_run_succeeds_and_reports_no_failure(make_project: Any) -> None:
    project = make_project(make_config(SWEPT))
    result = run_scheduler(project, "-m", "steps.0.arguments.print=x,y", "scheduler.dry_run=true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout + result.stderr
    assert result.stdout.count("crude-link: dry run, nothing is executed") == 2, result.stdout
    assert not list(project.glob("multirun/*/*/*/summary.json"))


def test_sigterm_during_a_multirun_job_stops_the_sweep_there(make_project: Any) -> None:
    """Hydra's own launcher runs the jobs one after another in this process: SIGTERM stops
    the running job (interrupted, 143) and no later job starts."""
    project = make_project(make_config(SWEPT_WAITING))
    proc = subprocess.Popen(
        scheduler_command(project, "-m", "steps.0.arguments.print=a,b"), cwd=project.parent,
        env=scheduler_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        read_until(proc.stdout.fileno(), b"waiting\n", timeout=30)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    jobs = summaries(project, "multirun")
    assert sorted(job.name for job in jobs) == ["0"], jobs  # job 1 never started
    [summary] = jobs.values()
    assert (summary["status"], summary["exit_code"]) == ("interrupted", 143)
    sweep = sweep_folder(project)
    assert err.decode().splitlines()[-2:] == [
        f"crude-link: 1 of 1 job(s) failed in {sweep}:",
        f"  job 0 (steps.0.arguments.print=a): interrupted, exit code 143; "
        f"{sweep / '0' / 'summary.json'}",
    ], err
    assert b"Traceback" not in out + err


def test_sighup_during_a_multirun_job_stops_the_sweep_there(make_project: Any) -> None:
    project = make_project(
        make_config("- {script: tasks/fate.py, arguments: {signals: signals.txt, "
                    "wait_for: never}}\n"))
    proc = subprocess.Popen(
        scheduler_command(project, "-m", "+steps.0.arguments.x=a,b"), cwd=project.parent,
        env=scheduler_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        read_until(proc.stdout.fileno(), b"waiting\n", timeout=30)
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_step_processes(project)
    assert proc.returncode == 129, err
    assert b"Traceback" not in out + err
    jobs = summaries(project, "multirun")
    assert sorted(job.name for job in jobs) == ["0"], jobs  # job 1 never started
    [summary] = jobs.values()
    assert (summary["status"], summary["exit_code"]) == ("interrupted", 129)
    assert sweep_folder(project).is_dir()


def test_a_multirun_job_with_a_config_error_is_reported_and_exits_2(make_project: Any) -> None:
    project = make_project(make_config(SWEPT))
    result = run_scheduler(project, "-m", "scheduler.kill_grace=1,-1")
    assert result.returncode == 2, result.stdout + result.stderr
    sweep = sweep_folder(project)
    assert result.stderr.splitlines()[-2:] == [
        f"crude-link: 1 of 2 job(s) failed in {sweep}:",
        f"  job 1 (scheduler.kill_grace=-1): config error, no step was run (exit code 2); "
        f"{sweep / '1' / 'scheduler.log'}",
    ], result.stderr
    assert load_json(sweep / "0" / "summary.json")["status"] == "succeeded"


