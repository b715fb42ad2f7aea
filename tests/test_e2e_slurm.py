"""End to end on a real single-node Slurm: steps run through srun, their output, exit codes,
retries, the dialog, timeouts and signals reach the task, and no job is left in squeue.

Every test takes the `slurm` fixture (tests/conftest.py): munged, slurmctld and slurmd run for
the session, SLURM_CONF points at them, and the queue must be empty before and after each test.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from conftest import (
    OPTIONS,
    PROMPT,
    finish,
    load_json,
    load_summary,
    read_until,
    rest_of_output,
    run_folder,
    run_scheduler,
    scheduler_command,
    scheduler_env,
    split_log,
    started_scheduler,
    step_statuses,
    terminal_text,
    wait_until_gone,
)

pytestmark = pytest.mark.e2e

# Any srun options go through: a partition, CPUs per task, a time limit (minutes), a job name.
SRUN = "[srun, --partition=debug, --cpus-per-task=2, --time=5, --job-name={name}]"


def config(steps: str) -> str:
    """Return a config with the given `steps:` items (indented by 2) and every option."""
    return "steps:\n" + steps + OPTIONS


def srun(name: str) -> str:
    return SRUN.format(name=name)


def srun_argv(name: str) -> List[str]:
    return ["srun", "--partition=debug", "--cpus-per-task=2", "--time=5", f"--job-name={name}"]


@contextlib.contextmanager
def task_cleanup(slurm: Any, record: Path) -> Iterator[None]:
    """On the way out, SIGKILL the task that wrote record if it is still there, and wait for
    its job to leave squeue, so a failed test does not fail the next one too."""
    try:
        yield
    finally:
        if record.exists():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(load_json(record)["pid"], signal.SIGKILL)
            slurm.wait_queue_empty(timeout=20)


def task_pid(record: Path) -> int:
    """Return the pid the task recorded; it must be a Slurm job's, not a local process."""
    seen = load_json(record)
    assert seen["env"]["SLURM_JOB_ID"].isdigit(), seen
    pid: int = seen["pid"]
    return pid


# ── Running on Slurm ─────────────────────────────────────────────────────


def test_a_step_runs_on_slurm_and_its_output_reaches_terminal_and_log(
    make_project: Any, slurm: Any
) -> None:
    project = make_project(
        config(
            f"""\
  - script: tasks/fate.py
    name: on-slurm
    launcher: {srun("crude-link-e2e")}
    arguments: {{record: on-slurm.json, lines: 3, stderr: to stderr}}
  - {{script: tasks/fate.py, name: local, launcher: [], arguments: {{record: local.json}}}}
  - {{script: tasks/fate.py, name: default, arguments: {{record: default.json, print: hi}}}}
"""
        )
    )
    # The default launcher of steps that set none, from the command line as the README shows.
    result = run_scheduler(project, "scheduler.launcher=[srun,'--partition=debug']")
    assert result.returncode == 0, result.stdout + result.stderr
    # srun forwards stdout and stderr on separate streams: within each the order holds.
    assert "line 1\nline 2\nline 3\n" in result.stdout, result.stdout  # streamed live
    assert result.stdout.count("to stderr\n") == 1, result.stdout
    folder = run_folder(project)
    log, attempts = split_log(folder / "01-on-slurm.log")
    assert attempts == [1]
    assert log.count(b"to stderr\n") == 1, log  # byte for byte, nothing else
    assert log.replace(b"to stderr\n", b"") == b"line 1\nline 2\nline 3\n", log
    assert split_log(folder / "03-default.log") == (b"hi\n", [1])

    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("succeeded", 0)
    assert step_statuses(summary) == ["succeeded", "succeeded", "succeeded"]
    assert [s["exit_code"] for s in summary["steps"]] == [0, 0, 0]
    commands = [s["command"] for s in summary["steps"]]
    assert commands[0][:5] == srun_argv("crude-link-e2e")
    assert commands[1][0] == sys.executable
    assert commands[2][:2] == ["srun", "--partition=debug"]

    on_slurm = load_json(project / "on-slurm.json")["env"]
    assert on_slurm["SLURM_JOB_ID"].isdigit()  # it ran as a Slurm job
    assert on_slurm["SLURM_CPUS_PER_TASK"] == "2"  # with the options given
    assert on_slurm["CRUDE_LINK_STEP"] == "on-slurm"  # and the scheduler's environment
    local = load_json(project / "local.json")["env"]
    assert "SLURM_JOB_ID" not in local  # `launcher: []` wins over scheduler.launcher
    assert local["CRUDE_LINK_STEP"] == "local"
    default = load_json(project / "default.json")["env"]
    assert default["SLURM_JOB_ID"].isdigit()  # scheduler.launcher
    assert default["SLURM_JOB_ID"] != on_slurm["SLURM_JOB_ID"]
    assert "SLURM_CPUS_PER_TASK" not in default  # not the other step's options
    assert default["CRUDE_LINK_STEP"] == "default"


def test_the_exit_code_of_a_task_on_slurm_is_the_steps_and_the_runs(
    make_project: Any, slurm: Any
) -> None:
    project = make_project(
        config(
            f"""\
  - script: tasks/fate.py
    name: broken
    launcher: {srun("crude-link-exit")}
    arguments: {{print: about to fail, exit_code: 3}}
  - {{script: tasks/fate.py, name: later, arguments: {{record: later.json}}}}
"""
        )
    )
    result = run_scheduler(project)
    assert result.returncode == 3, result.stdout + result.stderr
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("failed", 3)
    assert step_statuses(summary) == ["failed", "not_run"]
    assert summary["steps"][0]["exit_code"] == 3
    log, attempts = split_log(run_folder(project) / "01-broken.log")
    assert attempts == [1]
    assert log.startswith(b"about to fail\n")
    assert not (project / "later.json").exists()


def test_retries_of_a_step_on_slurm_run_it_again_as_a_new_job(
    make_project: Any, slurm: Any
) -> None:
    project = make_project(
        config(
            f"""\
  - script: tasks/fate.py
    name: flaky
    retries: 1
    launcher: {srun("crude-link-retry")}
    arguments: {{print: attempt output, fail_times: 1, marker: flaky.count, exit_code: 5}}
"""
        )
    )
    result = run_scheduler(project)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("succeeded", 0)
    flaky = summary["steps"][0]
    assert (flaky["status"], flaky["exit_code"], flaky["attempts"]) == ("succeeded", 0, 2)
    assert (project / "flaky.count").read_text() == "2"
    log, attempts = split_log(run_folder(project) / "01-flaky.log")
    assert attempts == [1, 2]
    assert log.count(b"attempt output\n") == 2
    assert log.endswith(b"attempt output\n")  # the successful attempt adds nothing else


def test_dialog_retry_of_a_failed_step_on_slurm(
    make_project: Any, spawn_scheduler: Any, slurm: Any
) -> None:
    project = make_project(
        config(
            f"""\
  - script: tasks/fate.py
    name: flaky
    launcher: {srun("crude-link-dialog")}
    arguments: {{print: attempt output, fail_times: 1, marker: flaky.count}}
  - {{script: tasks/fate.py, name: next, arguments: {{record: next.json}}}}
"""
        )
    )
    child = spawn_scheduler(project)
    child.expect(PROMPT, timeout=60)
    assert slurm.wait_queue_empty(timeout=10) == []  # no job is held while the dialog waits
    child.sendline("r")
    assert finish(child) == 0, terminal_text(child)
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("succeeded", 0)
    assert step_statuses(summary) == ["succeeded", "succeeded"]
    assert summary["steps"][0]["attempts"] == 2
    assert (project / "flaky.count").read_text() == "2"
    log, attempts = split_log(run_folder(project) / "01-flaky.log")
    assert attempts == [1, 2]
    assert log.count(b"attempt output\n") == 2
    assert (project / "next.json").exists()


# ── Timeouts ─────────────────────────────────────────────────────────────


def test_a_timed_out_step_on_slurm_gets_sigterm_in_its_task_and_exits_124(
    make_project: Any, slurm: Any
) -> None:
    # timeout: 3, not less: srun and the task's Python must start, on a busy machine too,
    # before the task's SIGTERM handler is in place.
    project = make_project(
        config(
            f"""\
  - script: tasks/fate.py
    name: slow
    timeout: 3
    launcher: {srun("crude-link-timeout")}
    arguments: {{record: slow.json, trap: true, print: started, sleep: 60}}
  - {{script: tasks/fate.py, name: later, arguments: {{record: later.json}}}}
"""
        )
    )
    with task_cleanup(slurm, project / "slow.json"):
        began = time.monotonic()
        result = run_scheduler(project)
        elapsed = time.monotonic() - began
        assert result.returncode == 124, result.stdout + result.stderr
        assert elapsed < 30  # not the task's 60 s
        assert wait_until_gone(task_pid(project / "slow.json"), 5), "the task outlived its timeout"
        summary = load_summary(project)
        assert (summary["status"], summary["exit_code"]) == ("failed", 124)
        slow = summary["steps"][0]
        assert (slow["status"], slow["exit_code"], slow["attempts"]) == ("timed_out", 124, 1)
        assert step_statuses(summary) == ["timed_out", "not_run"]
        assert 3 <= slow["duration_s"] < 20
        log, attempts = split_log(run_folder(project) / "01-slow.log")
        assert attempts == [1]
        assert log.startswith(b"started\n"), log
        # The task itself got SIGTERM and could clean up (srun alone would SIGKILL it).
        assert b"fate: got SIGTERM\n" in log, log
        assert not (project / "later.json").exists()


def test_a_timed_out_step_on_slurm_that_ignores_sigterm_is_killed_after_kill_grace(
    make_project: Any, slurm: Any
) -> None:
    project = make_project(
        config(
            f"""\
  - script: tasks/fate.py
    name: stubborn
    timeout: 3
    launcher: {srun("crude-link-stubborn")}
    arguments: {{record: stubborn.json, ignore_term: true, print: started, sleep: 60}}
"""
        )
    )
    with task_cleanup(slurm, project / "stubborn.json"):
        began = time.monotonic()
        result = run_scheduler(project, "scheduler.kill_grace=1")
        elapsed = time.monotonic() - began
        assert result.returncode == 124, result.stdout + result.stderr
        assert elapsed < 20  # timeout + kill_grace + Slurm's bookkeeping, not the task's 60 s
        summary = load_summary(project)
        assert (summary["status"], summary["exit_code"]) == ("failed", 124)
        step = summary["steps"][0]
        assert (step["status"], step["exit_code"]) == ("timed_out", 124)
        assert 4 - 0.1 <= step["duration_s"] < 15  # SIGTERM did not end it: SIGKILL did
        log, _ = split_log(run_folder(project) / "01-stubborn.log")
        assert log.startswith(b"started\n"), log
        # Killed after kill_grace: not still running, its job not left in squeue until
        # Slurm's own KillWait (30 s in tests/slurm_cluster.py) runs out.
        assert wait_until_gone(task_pid(project / "stubborn.json"), 5), (
            "the task that ignores SIGTERM outlived timeout + kill_grace"
        )
        assert slurm.wait_queue_empty(timeout=5) == []


# ── Signals to the scheduler ─────────────────────────────────────────────


def test_sigterm_to_the_scheduler_reaches_the_task_on_slurm_and_exits_143(
    make_project: Any, slurm: Any
) -> None:
    project = make_project(
        config(
            f"""\
  - script: tasks/fate.py
    name: waiter
    launcher: {srun("crude-link-sigterm")}
    arguments: {{record: waiter.json, trap: true, wait_for: never.txt}}
  - {{script: tasks/fate.py, name: later, arguments: {{record: later.json}}}}
"""
        )
    )
    with task_cleanup(slurm, project / "waiter.json"), started_scheduler(project) as proc:
        assert proc.stdout is not None
        output = read_until(proc.stdout.fileno(), b"waiting\n", timeout=60)
        running = slurm.squeue()
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        output += rest_of_output(proc)
        took = time.monotonic() - signalled
        text = output.decode("utf-8", errors="replace")
        assert proc.returncode == 143, text
        assert took < 20
        assert "Traceback" not in text
        # The job ran under the name given to srun; the scheduler found it and signalled it.
        assert [line.split()[1:] for line in running] == [["RUNNING", "crude-link-sigterm"]]
        assert wait_until_gone(task_pid(project / "waiter.json"), 5), (
            "the task outlived the scheduler")
        summary = load_summary(project)
        assert (summary["status"], summary["exit_code"]) == ("interrupted", 143)
        assert step_statuses(summary) == ["interrupted", "not_run"]
        assert summary["steps"][0]["exit_code"] == 143
        assert summary["finished"] is not None
        log, _ = split_log(run_folder(project) / "01-waiter.log")
        assert log.startswith(b"waiting\n"), log
        assert b"fate: got SIGTERM\n" in log, log
        assert not (project / "later.json").exists()


def test_ctrl_c_reaches_the_task_on_slurm_and_exits_130(
    make_project: Any, spawn_scheduler: Any, slurm: Any
) -> None:
    project = make_project(
        config(
            f"""\
  - script: tasks/fate.py
    name: waiter
    launcher: {srun("crude-link-sigint")}
    arguments: {{record: waiter.json, trap: true, wait_for: never.txt}}
  - {{script: tasks/fate.py, name: later, arguments: {{record: later.json}}}}
"""
        )
    )
    with task_cleanup(slurm, project / "waiter.json"):
        child = spawn_scheduler(project)
        child.expect("waiting", timeout=60)
        child.sendintr()
        assert finish(child) == 130, terminal_text(child)
        assert "Traceback" not in terminal_text(child)
        assert wait_until_gone(task_pid(project / "waiter.json"), 5), (
            "the task outlived the scheduler")
        summary = load_summary(project)
        assert (summary["status"], summary["exit_code"]) == ("interrupted", 130)
        assert step_statuses(summary) == ["interrupted", "not_run"]
        assert summary["steps"][0]["exit_code"] == 130
        log, _ = split_log(run_folder(project) / "01-waiter.log")
        assert log.startswith(b"waiting\n"), log
        # The step runs in its own session: only the scheduler (through Slurm) passed Ctrl-C on.
        assert b"fate: got SIGINT\n" in log, log
        assert not (project / "later.json").exists()


def test_inside_an_allocation_sigterm_reaches_the_task_of_the_job_step(
    make_project: Any, slurm: Any
) -> None:
    """Run the scheduler inside `salloc`: srun then starts a job *step* of that allocation
    (no job of its own in squeue). The scheduler finds the step by srun's pid (scontrol's
    SrunHost:Pid) and signals it with scancel, so the task gets SIGTERM (143), not srun's
    SIGKILL (137), and the allocation itself, which holds the scheduler, is left alone."""
    project = make_project(
        config(
            """\
  - script: tasks/fate.py
    name: waiter
    launcher: [srun, --ntasks=1]
    arguments: {record: waiter.json, trap: true, wait_for: never.txt}
"""
        )
    )
    salloc = ["salloc", "--partition=debug", "--ntasks=1", "--job-name=crude-link-alloc",
              *scheduler_command(project)]
    with task_cleanup(slurm, project / "waiter.json"), subprocess.Popen(
        salloc, cwd=project.parent, env=scheduler_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    ) as proc:
        assert proc.stdout is not None
        output = read_until(proc.stdout.fileno(), b"waiting\n", timeout=60)
        steps = subprocess.run(["squeue", "--steps", "--noheader", "--format", "%i %j"],
                               capture_output=True, text=True, check=True).stdout.split()
        [scheduler] = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                     text=True, check=True).stdout.split()
        os.kill(int(scheduler), signal.SIGTERM)
        output += rest_of_output(proc)
        text = output.decode("utf-8", errors="replace")
    assert proc.returncode == 143, text  # salloc exits with its command's code
    assert len(steps) == 2 and steps[0].endswith(".0"), steps  # one job step, e.g. 12.0
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("interrupted", 143), text
    assert (summary["steps"][0]["status"], summary["steps"][0]["exit_code"]) == (
        "interrupted", 143), text
    log, _ = split_log(run_folder(project) / "01-waiter.log")
    assert log.startswith(b"waiting\n") and b"fate: got SIGTERM\n" in log, log
    assert b"Killed" not in log, log
    assert "crude-link: stopped by SIGTERM" in text, text
