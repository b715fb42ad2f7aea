"""End to end: scheduler.keep prunes old runs, and cron.log is rotated (README "Keeping
outputs/ small"), with real run folders of every kind pruning must leave alone.
"""

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional

from conftest import load_json, run_scheduler, scheduler_command, scheduler_env

CHAIN = """\
steps:
  - script: tasks/fate.py
    name: first
    arguments: {record: first.json}
  - script: tasks/fate.py
    name: second
    arguments: {exit_code: 0, record: second.json}
scheduler:
  dry_run: false
  resume: false
  on_failure: abort
  keep: {runs: null, days: null}
"""


def fake_run(project: Path, folder: str, started: datetime, status: str = "succeeded",
             extra: Optional[Dict[str, Any]] = None, top: str = "outputs") -> Path:
    """Write a run folder as crude-link leaves one: summary.json, a step log, .hydra/."""
    path = project / top / folder
    (path / ".hydra").mkdir(parents=True)
    (path / "01-first.log").write_text("old output\n")
    summary = {"status": status, "exit_code": 0, "started": started.isoformat(),
               "finished": None, "output_dir": str(path), "steps": [], **(extra or {})}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def days_ago(days: float) -> datetime:
    return datetime.now().astimezone() - timedelta(days=days)


def real_runs(project: Path) -> List[Path]:
    return sorted(p.parent for p in project.glob("outputs/*/*/summary.json")
                  if p.parent.parent.name >= "2026")


def test_pruning_leaves_every_protected_kind_and_the_resume_chain_resumes(
    make_project: Any,
) -> None:
    project = make_project(CHAIN)
    old = fake_run(project, "2020-01-01/10-00-00-1", days_ago(2000))
    older_day_also = fake_run(project, "2020-01-02/10-00-00-2", days_ago(1999), "failed")
    killed = fake_run(project, "2020-01-03/10-00-00-3", days_ago(1998), "running")
    no_summary = project / "outputs" / "2020-01-04" / "10-00-00-4"
    no_summary.mkdir(parents=True)
    (no_summary / "notes.txt").write_text("not a run crude-link made")
    not_ours = project / "outputs" / "2020-01-05" / "10-00-00-5"
    not_ours.mkdir(parents=True)
    (not_ours / "summary.json").write_text('{"accuracy": 0.9}')
    deployed = project / "outputs" / "deployed"
    deployed.mkdir()
    (deployed / "summary.json").write_text('{"status": "succeeded", "steps": []}')
    old_sweep = fake_run(project, "2020-01-01/10-00-00-7/0", days_ago(2000), top="multirun")
    fake_run(project, "2020-01-01/10-00-00-7/1", days_ago(2000), top="multirun")
    (old_sweep.parent / "multirun.yaml").write_text("hydra: {}\n")
    half_sweep = fake_run(project, "2020-01-02/10-00-00-8/0", days_ago(1999), top="multirun")
    fake_run(project, "2020-01-02/10-00-00-8/1", days_ago(1999), "running", top="multirun")
    user_sweep = fake_run(project, "2020-01-03/10-00-00-9/0", days_ago(1998), top="multirun")
    (user_sweep.parent / "mine.txt").write_text("the user's")
    newest_sweep = fake_run(project, "2021-01-03/10-00-00-6/0", days_ago(300), top="multirun")

    first = run_scheduler(project, "steps.1.arguments.exit_code=3")  # keep unset: no pruning
    assert first.returncode == 3, first.stdout + first.stderr
    assert old.exists()
    (origin,) = real_runs(project)
    second = run_scheduler(project, "scheduler.resume=true", "steps.1.arguments.exit_code=3",
                           "scheduler.keep.runs=1")
    assert second.returncode == 3, second.stdout + second.stderr
    resumed = [run for run in real_runs(project) if run != origin]
    assert len(resumed) == 1
    assert origin.exists(), "the run the resumed run reused must stay"
    assert not old.exists() and not older_day_also.exists()
    assert not old.parent.exists(), "an emptied day folder goes with its last run"
    assert not old_sweep.parent.exists(), "an old, finished sweep goes as a whole"
    for stays in (killed, no_summary / "notes.txt", not_ours / "summary.json",
                  deployed / "summary.json", half_sweep.parent / "1", user_sweep,
                  newest_sweep,  # sweeps are counted apart: the newest one is within runs=1
                  project / "outputs" / "latest"):
        assert stays.exists(), stays
    said = (resumed[0] / "scheduler.log").read_text()
    assert f"removed run {old}" in said and f"removed sweep {old_sweep.parent}" in said
    assert str(origin) not in said.split("scheduler.keep")[-1]

    third = run_scheduler(project, "scheduler.resume=true")
    assert third.returncode == 0, third.stdout + third.stderr
    newest = max(real_runs(project), key=lambda run: load_json(run / "summary.json")["started"])
    steps = load_json(newest / "summary.json")["steps"]
    assert [step["status"] for step in steps] == ["succeeded", "succeeded"]
    assert steps[0]["reused_from"] == str(origin) and steps[1]["attempts"] == 1
    assert load_json(project / "second.json")["env"]["CRUDE_LINK_RUN_DIR"] == str(newest)


def test_days_keeps_young_runs_and_a_dry_run_lists_what_would_go(make_project: Any) -> None:
    project = make_project(CHAIN)
    ancient = fake_run(project, "2021-03-01/09-00-00-1", days_ago(10))
    young = fake_run(project, "2021-03-02/09-00-00-2", days_ago(1))
    dry = run_scheduler(project, "scheduler.dry_run=true", "scheduler.keep.days=5")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would remove 1 folder(s)" in dry.stdout and f"run {ancient} " in dry.stdout
    assert str(young) not in dry.stdout
    assert ancient.exists(), "a dry run removes nothing"
    result = run_scheduler(project, "scheduler.keep.days=5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not ancient.exists() and young.exists() and len(real_runs(project)) == 1
    # A run goes only when neither limit keeps it: the 1-day-old run is third newest now.
    assert run_scheduler(project, "scheduler.keep.days=0.5", "scheduler.keep.runs=2"
                         ).returncode == 0
    assert young.exists() is False and len(real_runs(project)) == 2


def test_bad_keep_values_are_config_errors_listed_together(make_project: Any) -> None:
    project = make_project(CHAIN)
    result = run_scheduler(project, "scheduler.keep.runs=0", "scheduler.keep.days=soon",
                           "+scheduler.keep.weeks=3")
    assert result.returncode == 2, result.stdout + result.stderr
    for text in ("keep.runs must be a whole number", "keep.days must be a number of days",
                 "keep has an unknown key 'weeks'"):
        assert text in result.stderr, result.stderr
    assert not (project / "first.json").exists()


WRITER = """\
import os, sys, time
path, tag, stop, reopen = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "reopen"
count = 0
out = open(path, "ab", buffering=0)
while not os.path.exists(stop):
    if reopen:  # a new cron run each time: >> opens cron.log by its name
        out.close()
        out = open(path, "ab", buffering=0)
    out.write(f"{tag} {count}\\n".encode())
    count += 1
    time.sleep(0.001)
out.close()
print(count)
"""


def test_cron_log_is_rotated_without_losing_a_line_of_a_writer(make_project: Any,
                                                             tmp_path: Path) -> None:
    project = make_project(CHAIN)
    cron_log = project / "outputs" / "cron.log"
    cron_log.parent.mkdir()
    filler = [f"filler {i:07d} {'x' * 100}" for i in range(100_000)]  # past 10 MiB
    cron_log.write_text("\n".join(filler) + "\n")
    (project / "outputs" / "cron.log.1").write_text("the oldest copy\n")
    stop = tmp_path / "stop"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(cron_log), tag, str(stop),
                                 mode], stdout=subprocess.PIPE, text=True)
               for tag, mode in (("held", "keep"), ("reopened", "reopen"))]
    try:
        time.sleep(0.3)
        with cron_log.open("ab") as out:  # the scheduler itself, as the crontab line runs it
            run = subprocess.run(scheduler_command(project), cwd="/", stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, env=scheduler_env(),
                                 timeout=60)
        time.sleep(0.3)
    finally:
        stop.touch()
        counts = [int(writer.communicate(timeout=30)[0]) for writer in writers]
    assert run.returncode == 0
    old = (project / "outputs" / "cron.log.1").read_text().splitlines()
    new = cron_log.read_text().splitlines()
    assert old[:len(filler)] == filler, "the rotated copy starts with the old log, whole"
    lines = old + new
    for tag, count in zip(("held", "reopened"), counts):
        written = [line for line in lines if line.startswith(tag + " ")]
        assert written == [f"{tag} {i}" for i in range(count)], f"{tag}: lines lost or repeated"
    assert any(line.startswith("reopened ") for line in new), "later opens get a new cron.log"
    assert not any(line.startswith("held ") for line in new), "a held file stays cron.log.1"
    assert any("run succeeded" in line for line in old), "the rotating run wrote to its file"
    assert "the oldest copy" not in lines
    assert cron_log.stat().st_size < 10 * 1024 * 1024
