"""End to end: commands that run no step leave no run folder (README "Keeping outputs/ small").

Each test lists outputs/ before and after a command that runs no step: a dry run, cron=print,
--cfg job, a config error, a run refused by the lock, a resume with nothing to resume.
"""

import fcntl
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest
from conftest import load_json, run_folder, run_scheduler

NEVER = "0 0 31 2 *"  # 31 February: a schedule that never fires

ONE_STEP = """\
steps:
  - script: tasks/fate.py
    arguments: {record: ran.json}
scheduler: {dry_run: false, resume: false, cron: null, schedule: null, on_failure: abort}
"""


def listing(project: Path) -> List[str]:
    """Return every path under outputs/, relative to it, sorted ([] if there is none)."""
    outputs = project / "outputs"
    return sorted(str(path.relative_to(outputs)) for path in outputs.rglob("*"))


def assert_no_step_ran(project: Path) -> None:
    assert not (project / "ran.json").exists()


def test_a_dry_run_leaves_nothing_in_outputs(make_project: Any) -> None:
    project = make_project(ONE_STEP)
    result = run_scheduler(project, "scheduler.dry_run=true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dry run" in result.stdout
    assert listing(project) == []
    assert_no_step_ran(project)


def test_cron_print_leaves_nothing_in_outputs(make_project: Any) -> None:
    project = make_project(ONE_STEP)
    result = run_scheduler(project, "scheduler.cron=print", f"scheduler.schedule={NEVER}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cron.log" in result.stdout  # the line itself is the message
    assert listing(project) == []
    assert (project / "outputs").is_dir()  # the printed line appends to outputs/cron.log


@pytest.mark.parametrize("words", [["scheduler.dry_run=true"], ["scheduler.on_failure=sometimes"],
                                   ["scheduler.resume=true"]], ids=["dry run", "config error",
                                                                    "nothing to resume"])
def test_a_first_command_that_runs_no_step_leaves_no_outputs_folder(
        make_project: Any, words: List[str]) -> None:
    project = make_project(ONE_STEP)
    assert not (project / "outputs").exists()
    result = run_scheduler(project, *words)
    assert result.returncode in (0, 2), result.stdout + result.stderr
    assert not (project / "outputs").exists(), listing(project)


def test_an_empty_outputs_folder_is_no_longer_left_but_one_holding_cron_log_stays(
        make_project: Any) -> None:
    project = make_project(ONE_STEP)
    (project / "outputs").mkdir()
    (project / "outputs" / "cron.log").write_text("an earlier night\n", encoding="utf-8")
    assert run_scheduler(project, "scheduler.dry_run=true").returncode == 0
    assert listing(project) == ["cron.log"]


def test_cfg_job_makes_no_outputs_folder_at_all(make_project: Any) -> None:
    project = make_project(ONE_STEP)
    result = run_scheduler(project, "--cfg", "job")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tasks/fate.py" in result.stdout
    assert not (project / "outputs").exists()  # Hydra prints and exits before making one


def test_a_config_error_leaves_nothing_but_its_message(make_project: Any) -> None:
    project = make_project(ONE_STEP)
    result = run_scheduler(project, "scheduler.on_failure=sometimes")
    assert result.returncode == 2
    assert "on_failure must be one of" in result.stderr
    assert listing(project) == []


def test_a_resume_with_no_earlier_run_leaves_nothing(make_project: Any) -> None:
    project = make_project(ONE_STEP)
    result = run_scheduler(project, "scheduler.resume=true")
    assert result.returncode == 2
    assert "no earlier run" in result.stderr
    assert listing(project) == []


def test_a_resume_with_nothing_to_resume_leaves_only_the_earlier_run(make_project: Any) -> None:
    project = make_project(ONE_STEP)
    assert run_scheduler(project).returncode == 0
    before = listing(project)
    (project / "ran.json").unlink()
    result = run_scheduler(project, "scheduler.resume=true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing to resume" in result.stdout
    assert listing(project) == before
    assert_no_step_ran(project)


def test_a_run_refused_by_the_lock_leaves_nothing_but_its_message(make_project: Any) -> None:
    project = make_project(ONE_STEP)
    (project / "outputs").mkdir()
    with (project / "outputs" / ".crude-link.lock").open("w+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write(f"pid {os.getpid()}, started now, run folder elsewhere\n".encode())
        lock.flush()
        before = listing(project)
        result = run_scheduler(project)
    assert result.returncode == 75, result.stdout + result.stderr
    assert f"pid {os.getpid()}" in result.stderr
    assert listing(project) == before == [".crude-link.lock"]
    assert_no_step_ran(project)


def test_a_refused_cron_run_keeps_its_message_in_cron_log(make_project: Any, tmp_path: Path
                                                          ) -> None:
    project = make_project(ONE_STEP)
    (project / "outputs").mkdir()
    cron_log = project / "outputs" / "cron.log"
    with (project / "outputs" / ".crude-link.lock").open("w+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write(f"pid {os.getpid()}, started now, run folder elsewhere\n".encode())
        lock.flush()
        for _ in range(3):
            with cron_log.open("ab") as out:  # as the crontab line's >> does
                done = subprocess.run([sys.executable, str(project / "scheduler.py")],
                                      cwd="/", stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, timeout=60,
                                      env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
            assert done.returncode == 75
    assert listing(project) == [".crude-link.lock", "cron.log"]
    assert cron_log.read_text().count("not starting") == 3


def test_a_folder_of_the_users_own_that_held_files_stays(make_project: Any, tmp_path: Path
                                                         ) -> None:
    project = make_project(ONE_STEP)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    result = run_scheduler(project, "scheduler.dry_run=true", f"hydra.run.dir={mine}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (mine / "notes.txt").read_text() == "the user's"
    assert (mine / ".hydra").is_dir()  # Hydra's files there are left with the user's


def test_a_new_folder_set_by_the_user_goes_but_not_its_parent(make_project: Any, tmp_path: Path
                                                              ) -> None:
    project = make_project(ONE_STEP)
    (tmp_path / "runs").mkdir()
    result = run_scheduler(project, "scheduler.dry_run=true", f"hydra.run.dir={tmp_path}/runs/a")
    assert result.returncode == 0, result.stdout + result.stderr
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_real_run_keeps_its_folder_and_a_later_dry_run_keeps_the_day(make_project: Any
                                                                       ) -> None:
    project = make_project(ONE_STEP)
    assert run_scheduler(project).returncode == 0
    folder = run_folder(project)
    assert load_json(folder / "summary.json")["status"] == "succeeded"
    before = listing(project)
    assert run_scheduler(project, "scheduler.dry_run=true").returncode == 0
    assert run_scheduler(project, "scheduler.on_failure=sometimes").returncode == 2
    assert listing(project) == before
    assert (folder / "scheduler.log").stat().st_size > 0


def test_multirun_job_folders_stay_for_the_sweep_report(make_project: Any) -> None:
    project = make_project(ONE_STEP)
    result = run_scheduler(project, "-m", "steps.0.arguments.record=a.json,b.json",
                           "scheduler.dry_run=true")
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = [p for p in project.glob("multirun/*/*/*") if p.is_dir() and "latest" not in p.parts]
    assert len(jobs) == 2
