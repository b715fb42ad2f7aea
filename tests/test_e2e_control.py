"""End to end: stopping a run and its steps, and the run lock (README "How a step runs",
"Exit status").

Timeouts and kill_grace, SIGTERM, Ctrl-C and SIGHUP to the scheduler, a scheduler killed
outright (its watchdog stops the step), what a step leaves behind, waits that cost no CPU,
and the lock: one run of a folder at a time, never through a symlink.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Tuple

import ptyprocess
import pytest
from conftest import (
    LOCKED,
    OPTIONS,
    PROMPT,
    finish,
    kill_group,
    kill_if_alive,
    kill_step_processes,
    load_json,
    load_summary,
    make_config,
    new_run,
    output_text,
    read_until,
    run_folder,
    run_scheduler,
    scheduler_command,
    scheduler_env,
    started_scheduler,
    step_logs,
    step_processes,
    step_statuses,
    summaries,
    terminal_text,
    wait_for_no_step_processes,
    wait_until_gone,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _no_procfs_no_test() -> None:
    if not Path("/proc/self/environ").exists():
        pytest.skip("these tests find a step's processes in /proc")


def signalled_while_waiting(project: Path, signum: int) -> Tuple[int, str, float]:
    """Start the scheduler, send it signum once its step printed "waiting"; return its exit
    code, its output and the seconds from the signal to its end."""
    with started_scheduler(project) as proc:
        assert proc.stdout is not None
        read_until(proc.stdout.fileno(), b"waiting\n")
        proc.send_signal(signum)
        signalled = time.monotonic()
        output = output_text(proc)
        return proc.returncode, output, time.monotonic() - signalled


def exit_code_and_cpu(project: Path) -> Tuple[int, float]:
    """Run the scheduler; return its exit code and the CPU time it (and its steps) used."""
    proc = subprocess.Popen(scheduler_command(project), cwd=project.parent, env=scheduler_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        kill_step_processes(project)
    return proc.returncode, usage.ru_utime + usage.ru_stime


# ── Timeouts ─────────────────────────────────────────────────────────────


def test_a_step_past_its_timeout_is_stopped_with_its_process_group_and_exit_code_124(
    make_project: Any,
) -> None:
    project = make_project(
        make_config(
            """\
            - script: tasks/fate.py
              name: slow
              timeout: 1
              arguments: {signals: signals.txt, grandchild: grandchild.pid, wait_for: never}
            - {script: tasks/fate.py, name: next, arguments: {record: next.json}}
            """
        )
    )
    began = time.monotonic()
    result = run_scheduler(project)
    elapsed = time.monotonic() - began
    grandchild = int((project / "grandchild.pid").read_text())
    try:
        assert result.returncode == 124, result.stdout + result.stderr
        assert elapsed < 20  # not the step's 60 s
        assert (project / "signals.txt").read_text() == "SIGTERM\n"
        assert wait_until_gone(grandchild), f"the step's child {grandchild} outlived the timeout"
        summary = load_summary(project)
        assert (summary["status"], summary["exit_code"]) == ("failed", 124)
        slow = summary["steps"][0]
        assert (slow["status"], slow["exit_code"], slow["attempts"]) == ("timed_out", 124, 1)
        assert 1 <= slow["duration_s"] < 15
        assert step_statuses(summary) == ["timed_out", "not_run"]
        assert not (project / "next.json").exists()
    finally:
        kill_if_alive(grandchild)


def test_a_timed_out_step_that_ignores_sigterm_is_killed_after_kill_grace(
    make_project: Any,
) -> None:
    project = make_project(
        make_config(
            """\
            - script: tasks/fate.py
              timeout: 1
              arguments:
                signals: signals.txt
                on_signal: ignore
                grandchild: grandchild.pid
                grandchild_ignores_term: true
                wait_for: never
            """
        )
    )
    began = time.monotonic()
    result = run_scheduler(project)  # kill_grace: 1 (OPTIONS)
    elapsed = time.monotonic() - began
    grandchild = int((project / "grandchild.pid").read_text())
    try:
        assert result.returncode == 124, result.stdout + result.stderr
        assert elapsed < 20
        assert (project / "signals.txt").read_text() == "SIGTERM\n"  # asked first, then killed
        step = load_summary(project)["steps"][0]
        assert (step["status"], step["exit_code"]) == ("timed_out", 124)
        assert 2 - 0.1 <= step["duration_s"] < 15  # timeout + kill_grace
        assert wait_until_gone(grandchild), "SIGKILL did not reach the step's process group"
    finally:
        kill_if_alive(grandchild)


def test_waiting_out_kill_grace_after_a_timeout_costs_no_cpu(make_project: Any) -> None:
    project = make_project(
        make_config(
            "- {script: tasks/fate.py, timeout: 1, "
            "arguments: {on_signal: ignore, wait_for: never}}\n",
            OPTIONS.replace("kill_grace: 1", "kill_grace: 4")))
    code, cpu = exit_code_and_cpu(project)
    assert code == 124
    # Start-up (Python, Hydra) and the step take well under a second of CPU here; a busy
    # wait through kill_grace took all of its 4 s.
    assert cpu < 2.5, f"the scheduler used {cpu:.2f}s of CPU"


# ── Signals to the scheduler ─────────────────────────────────────────────


SIGNALLED = """\
- script: tasks/fate.py
  name: stubborn
  arguments: {{signals: signals.txt, grandchild: grandchild.pid, on_signal: {on_signal},
               grandchild_ignores_term: {ignores}, wait_for: never}}
- {{script: tasks/fate.py, name: later, arguments: {{record: later.json}}}}
"""


def test_sigterm_to_the_scheduler_stops_the_step_and_records_interrupted(
    make_project: Any,
) -> None:
    project = make_project(
        make_config(SIGNALLED.format(on_signal="exit", ignores="false"))
    )
    code, output, _ = signalled_while_waiting(project, signal.SIGTERM)
    grandchild = int((project / "grandchild.pid").read_text())
    try:
        assert code == 143, output
        assert "Traceback" not in output
        assert (project / "signals.txt").read_text() == "SIGTERM\n"
        assert wait_until_gone(grandchild), "the step's process group did not get SIGTERM"
        summary = load_summary(project)
        assert (summary["status"], summary["exit_code"]) == ("interrupted", 143)
        assert step_statuses(summary) == ["interrupted", "not_run"]
        assert summary["finished"] is not None
        assert not (project / "later.json").exists()
    finally:
        kill_if_alive(grandchild)


def test_sigterm_to_the_scheduler_kills_a_step_that_ignores_it_after_kill_grace(
    make_project: Any,
) -> None:
    project = make_project(
        make_config(SIGNALLED.format(on_signal="ignore", ignores="true"))
    )
    code, output, took = signalled_while_waiting(project, signal.SIGTERM)
    grandchild = int((project / "grandchild.pid").read_text())
    try:
        assert code == 143, output
        assert 1 - 0.1 <= took < 15  # kill_grace: 1
        assert (project / "signals.txt").read_text() == "SIGTERM\n"
        assert wait_until_gone(grandchild), "SIGKILL did not reach the step's process group"
        summary = load_summary(project)
        assert (summary["status"], summary["exit_code"]) == ("interrupted", 143)
        assert step_statuses(summary) == ["interrupted", "not_run"]
        assert summary["steps"][0]["exit_code"] == 128 + signal.SIGKILL
    finally:
        kill_if_alive(grandchild)


def test_ctrl_c_during_a_step_is_passed_on_and_exits_130(
    make_project: Any, spawn_scheduler: Any
) -> None:
    project = make_project(
        make_config(SIGNALLED.format(on_signal="exit", ignores="false"))
    )
    child = spawn_scheduler(project)
    child.expect("waiting")
    child.sendintr()
    assert finish(child) == 130
    grandchild = int((project / "grandchild.pid").read_text())
    try:
        # The step runs in its own session: only the scheduler could have passed Ctrl-C on.
        assert (project / "signals.txt").read_text() == "SIGINT\n"
        assert "Traceback" not in terminal_text(child)
        summary = load_summary(project)
        assert (summary["status"], summary["exit_code"]) == ("interrupted", 130)
        assert step_statuses(summary) == ["interrupted", "not_run"]
    finally:
        kill_if_alive(grandchild)


WAITING_THEN_LATER = """\
- script: tasks/fate.py
  name: sleeper
  arguments: {signals: signals.txt, grandchild: grandchild.pid, wait_for: never}
- {script: tasks/fate.py, name: later, arguments: {record: later.json}}
"""


def test_sighup_during_a_step_stops_it_and_the_run_ends_interrupted_with_129(
    make_project: Any,
) -> None:
    project = make_project(make_config(WAITING_THEN_LATER))
    with started_scheduler(project) as proc:
        assert proc.stdout is not None
        read_until(proc.stdout.fileno(), b"waiting\n")
        proc.send_signal(signal.SIGHUP)
        output = output_text(proc)
        assert proc.returncode == 129, output
        assert wait_for_no_step_processes(project) == []
    assert "Traceback" not in output
    assert (project / "signals.txt").read_text() == "SIGHUP\n"
    summary = load_json(run_folder(project) / "summary.json")
    assert (summary["status"], summary["exit_code"]) == ("interrupted", 129)
    assert step_statuses(summary) == ["interrupted", "not_run"]
    assert summary["finished"] is not None
    assert not (project / "later.json").exists()


def test_sighup_to_a_step_that_ignores_it_kills_it_after_kill_grace(make_project: Any) -> None:
    project = make_project(
        make_config("- {script: tasks/fate.py, arguments: {signals: signals.txt, "
                    "on_signal: ignore, wait_for: never}}\n"))
    code, output, took = signalled_while_waiting(project, signal.SIGHUP)
    assert code == 129, output
    assert 1 - 0.1 <= took < 15  # kill_grace: 1
    summary = load_json(run_folder(project) / "summary.json")
    assert (summary["status"], summary["exit_code"]) == ("interrupted", 129)
    assert summary["steps"][0]["exit_code"] == 128 + signal.SIGKILL


def close_the_terminal_after(project: Path, text: bytes) -> int:
    """Run the scheduler on a terminal, close that once it showed text; return the exit code."""
    command = scheduler_command(project)
    child = ptyprocess.PtyProcess.spawn(command, cwd=str(project.parent), env=scheduler_env())
    try:
        seen = b""
        deadline = time.monotonic() + 30
        while text not in seen:
            assert time.monotonic() < deadline, seen
            seen += child.read(4096)
        os.close(child.fd)  # the terminal goes away: the kernel sends SIGHUP
        child.closed = True
        child.wait()
        assert child.signalstatus is None, f"killed by signal {child.signalstatus}"
        code: int = child.exitstatus
        assert wait_for_no_step_processes(project) == []
    finally:
        if child.isalive():
            os.kill(child.pid, signal.SIGKILL)
        kill_step_processes(project)
    return code


def test_closing_the_terminal_stops_the_run_as_sighup(make_project: Any) -> None:
    project = make_project(make_config(WAITING_THEN_LATER))
    assert close_the_terminal_after(project, b"waiting\r\n") == 129
    assert (project / "signals.txt").read_text() == "SIGHUP\n"
    summary = load_json(run_folder(project) / "summary.json")
    assert (summary["status"], summary["exit_code"]) == ("interrupted", 129)
    assert step_statuses(summary) == ["interrupted", "not_run"]


def test_sighup_at_the_dialog_aborts_with_129(make_project: Any, spawn_scheduler: Any) -> None:
    project = make_project(
        make_config(
            """\
            - {script: tasks/fate.py, name: broken, arguments: {exit_code: 4}}
            - {script: tasks/fate.py, name: later, arguments: {record: later.json}}
            """))
    child = spawn_scheduler(project)
    child.expect(PROMPT)
    child.kill(signal.SIGHUP)
    assert finish(child) == 129
    assert "Traceback" not in terminal_text(child)
    summary = load_json(run_folder(project) / "summary.json")
    assert (summary["status"], summary["exit_code"]) == ("aborted", 129)
    assert step_statuses(summary) == ["failed", "not_run"]


def test_closing_the_terminal_at_the_dialog_aborts_with_129(make_project: Any) -> None:
    project = make_project(
        make_config("- {script: tasks/fate.py, name: broken, arguments: {exit_code: 4}}\n"))
    assert close_the_terminal_after(project, b"[a] abort") == 129
    summary = load_json(run_folder(project) / "summary.json")
    assert (summary["status"], summary["exit_code"]) == ("aborted", 129)


# ── A step does not outlive the scheduler: the watchdog ──────────────────


def test_kill_9_of_the_scheduler_stops_its_running_step_and_what_it_started(
    make_project: Any,
) -> None:
    project = make_project(
        make_config("- {script: tasks/fate.py, arguments: {signals: signals.txt, "
                    "grandchild: grandchild.pid, wait_for: never}}\n"))
    with started_scheduler(project) as proc:
        assert proc.stdout is not None
        read_until(proc.stdout.fileno(), b"waiting\n")
        assert len(step_processes(project)) == 2  # the step and its child
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert wait_for_no_step_processes(project) == [], "the step outlived the scheduler"
    assert (project / "signals.txt").read_text() == "SIGTERM\n"  # asked to stop, not killed
    summary = load_json(run_folder(project) / "summary.json")
    assert step_statuses(summary) == ["running"]  # the truth: nobody was left to write it


def test_after_kill_9_a_step_that_ignores_sigterm_is_killed_after_kill_grace(
    make_project: Any,
) -> None:
    project = make_project(
        make_config(
            "- {script: tasks/fate.py, arguments: {on_signal: ignore, grandchild: grandchild.pid, "
            "grandchild_ignores_term: true, wait_for: never}}\n"))
    with started_scheduler(project) as proc:
        assert proc.stdout is not None
        read_until(proc.stdout.fileno(), b"waiting\n")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        killed = time.monotonic()
        assert wait_for_no_step_processes(project, timeout=20) == []
        assert 1 - 0.2 <= time.monotonic() - killed < 15  # kill_grace: 1


# ── What a step leaves behind ────────────────────────────────────────────


@pytest.mark.parametrize("leave, child_ignores", [
    ("print", "-"),     # prints for ever: held the pipeline for good
    ("quiet", "term"),  # silent, ignores SIGTERM: ran on after the run
])
def test_processes_a_step_leaves_behind_are_stopped_and_the_run_goes_on(
    make_project: Any, leave: str, child_ignores: str
) -> None:
    project = make_project(
        make_config(
            f"""\
            - script: tasks/fate.py
              name: leaver
              arguments: {{grandchild: grandchild.pid,
                           grandchild_prints: {str(leave == "print").lower()},
                           grandchild_ignores_term: {str(child_ignores == "term").lower()}}}
            - {{script: tasks/fate.py, name: later, arguments: {{record: later.json}}}}
            """))
    try:
        began = time.monotonic()
        result = run_scheduler(project)
        took = time.monotonic() - began
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr
        assert took < 15  # kill_grace 1 and a moment, and start-up
        assert step_processes(project) == [], "a process of the step outlived it"
    finally:
        kill_step_processes(project)
    summary = load_json(run_folder(project) / "summary.json")
    assert step_statuses(summary) == ["succeeded", "succeeded"]
    assert (project / "later.json").exists()
    assert summary["steps"][0]["duration_s"] < 10


def test_the_timeout_covers_what_a_step_leaves_behind(make_project: Any) -> None:
    project = make_project(
        make_config(
            """\
            - script: tasks/fate.py
              name: leaver
              timeout: 1
              arguments:
                {grandchild: grandchild.pid, grandchild_prints: true, grandchild_ignores_term: true}
            """,
            OPTIONS.replace("kill_grace: 1", "kill_grace: 2")))
    try:
        result = run_scheduler(project)
        assert result.returncode == 124, result.stdout[-2000:] + result.stderr
        assert step_processes(project) == []
    finally:
        kill_step_processes(project)
    step = load_json(run_folder(project) / "summary.json")["steps"][0]
    assert (step["status"], step["exit_code"]) == ("timed_out", 124)
    assert 1 <= step["duration_s"] < 10  # the timeout, then SIGKILL after kill_grace


def test_waiting_for_what_a_step_left_costs_no_cpu(make_project: Any) -> None:
    project = make_project(
        make_config(
            "- {script: tasks/fate.py, arguments: {grandchild: grandchild.pid, "
            "grandchild_ignores_term: true}}\n",
            OPTIONS.replace("kill_grace: 1", "kill_grace: 4")))
    code, cpu = exit_code_and_cpu(project)
    assert code == 0
    assert cpu < 2.5, f"the scheduler used {cpu:.2f}s of CPU"  # a busy wait: 4 s


def test_the_step_processes_helper_sees_a_running_step(make_project: Any) -> None:
    """The tests above trust step_processes() to find a step: check that it does."""
    project = make_project(make_config("- {script: tasks/fate.py, arguments: {wait_for: never}}\n"))
    with started_scheduler(project) as proc:
        assert proc.stdout is not None
        read_until(proc.stdout.fileno(), b"waiting\n")
        assert len(step_processes(project)) == 1
    assert sys.platform.startswith("linux")


# ── The run lock ─────────────────────────────────────────────────────────


# wait_for is relative to the root, the step's cwd: config.yaml always exists there.
NO_WAIT = "steps.0.arguments.wait_for=config.yaml"


def test_a_second_run_exits_75_while_the_first_runs_unless_lock_is_false(
    make_project: Any, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    project = make_project(
        make_config(
            f"- {{script: tasks/fate.py, arguments: {{record: first.json, wait_for: {go}}}}}"
        )
    )
    with started_scheduler(project) as first:
        assert first.stdout is not None
        read_until(first.stdout.fileno(), b"waiting\n")
        began = time.monotonic()
        second = run_scheduler(project, "steps.0.arguments.record=second.json", NO_WAIT)
        assert time.monotonic() - began < 10  # at once: it does not wait for the first run
        assert second.returncode == 75, second.stdout + second.stderr
        assert re.search(rf"\b{first.pid}\b", second.stdout + second.stderr)
        assert "Traceback" not in second.stdout + second.stderr
        assert not (project / "second.json").exists()
        assert len(summaries(project)) == 1  # the second run recorded no run
        assert step_logs(project) == ["01-fate.log"]

        unlocked = run_scheduler(
            project, "steps.0.arguments.record=third.json", NO_WAIT, "scheduler.lock=false"
        )
        assert unlocked.returncode == 0, unlocked.stdout + unlocked.stderr
        assert (project / "third.json").exists()

        go.touch()
        output = output_text(first)
    assert first.returncode == 0, output
    assert [s["status"] for s in summaries(project).values()] == ["succeeded"] * 2


def test_the_lock_dies_with_a_scheduler_killed_outright(make_project: Any, tmp_path: Path) -> None:
    project = make_project(
        make_config(
            f"""\
            - script: tasks/fate.py
              arguments: {{record: first.json, wait_for: {tmp_path / "never"}}}
            - {{script: tasks/fate.py, name: second}}
            """
        )
    )
    with started_scheduler(project) as first:
        assert first.stdout is not None
        read_until(first.stdout.fileno(), b"waiting\n")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    step_pid = load_json(project / "first.json")["pid"]
    try:
        killed = load_summary(project)
        assert killed["status"] == "running"
        assert step_statuses(killed) == ["running", "not_run"]
        # The step is stopped (SIGTERM) by the run's watchdog, which holds the lock until
        # then; the lock has not passed to the step (its own, inherited, would stay).
        assert wait_until_gone(step_pid), "the step outlived the scheduler"
        before = set(summaries(project))
        after = run_scheduler(project, "steps.0.arguments.record=again.json", NO_WAIT)
        assert after.returncode == 0, after.stdout + after.stderr
        assert (project / "again.json").exists()
        assert summaries(project)[new_run(project, before)]["status"] == "succeeded"
    finally:
        kill_group(step_pid)


def test_a_new_run_is_refused_while_a_step_of_a_killed_scheduler_still_runs(
    make_project: Any,
) -> None:
    project = make_project(
        make_config(
            "- script: tasks/fate.py\n"
            "  arguments: {signals: signals.txt, on_signal: ignore, wait_for: never}\n",
            OPTIONS.replace("kill_grace: 1", "kill_grace: 60")))
    with started_scheduler(project) as proc:
        assert proc.stdout is not None
        read_until(proc.stdout.fileno(), b"waiting\n")
        first = run_folder(project)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while not (project / "signals.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (project / "signals.txt").read_text() == "SIGTERM\n"
        [step] = step_processes(project)  # it ignores SIGTERM: it still runs

        refused = run_scheduler(project, "scheduler.resume=true")
        output = refused.stdout + refused.stderr
        assert refused.returncode == 75, output
        assert "Traceback" not in output
        message = [line for line in output.splitlines() if "still runs" in line]
        assert message and str(first) in message[0], output
        assert list(summaries(project)) == [first]  # the refused run recorded nothing
        assert [p.name for p in (project / "outputs").glob("*/*/[0-9][0-9]-*.log")] == [
            "01-fate.log"]

        os.kill(step, signal.SIGKILL)
        assert wait_for_no_step_processes(project) == []
        deadline = time.monotonic() + 5  # the lock goes with the step's last process
        while True:
            again = run_scheduler(project, "scheduler.resume=true", NO_WAIT)
            if again.returncode != 75 or time.monotonic() > deadline:
                break
        assert again.returncode == 0, again.stdout + again.stderr


def test_a_run_refused_by_the_lock_leaves_no_run_folder(make_project: Any, tmp_path: Path) -> None:
    project = make_project(make_config("- {script: tasks/fate.py, arguments: {wait_for: never}}\n"))
    with started_scheduler(project) as first:
        assert first.stdout is not None
        read_until(first.stdout.fileno(), b"waiting\n")
        refused = run_scheduler(project)
        assert refused.returncode == 75, refused.stdout + refused.stderr
        folders = [p for p in (project / "outputs").glob("*/*") if p.is_dir()
                   and not p.parent.is_symlink()]
        assert folders == [run_folder(project)], folders
        assert [p.name for p in (project / "outputs").iterdir()
                if p.name.startswith(".latest")] == []


def lock_path(project: Path) -> Path:
    (project / "outputs").mkdir(exist_ok=True)
    return project / "outputs" / ".crude-link.lock"


def assert_lock_refused(project: Path, result: Any, what: str) -> None:
    """Assert exit 70 with one line naming the lock path and what is wrong; no step ran."""
    assert result.returncode == 70, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(lock_path(project)) in lines[0] and what in lines[0], lines[0]
    assert not (project / "ran.json").exists(), "no step may run"
    assert list((project / "outputs").glob("*/*/summary.json")) == []


def test_the_lock_never_writes_through_a_symlink(make_project: Any, tmp_path: Path) -> None:
    project = make_project(LOCKED)
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"my thesis, chapter 1\n")
    lock_path(project).symlink_to(victim)
    result = run_scheduler(project)
    assert_lock_refused(project, result, "symbolic link")
    assert victim.read_bytes() == b"my thesis, chapter 1\n"
    assert lock_path(project).is_symlink(), "the user's link is left for the user to look at"


def test_a_dangling_lock_symlink_creates_nothing(make_project: Any, tmp_path: Path) -> None:
    project = make_project(LOCKED)
    target = tmp_path / "made-by-crude-link"
    lock_path(project).symlink_to(target)
    result = run_scheduler(project)
    assert_lock_refused(project, result, "symbolic link")
    assert not target.exists() and not target.is_symlink()


def test_a_lock_path_that_is_a_folder_or_a_fifo_is_an_error_at_once(make_project: Any) -> None:
    project = make_project(LOCKED)
    lock_path(project).mkdir()
    assert_lock_refused(project, run_scheduler(project), "folder")
    lock_path(project).rmdir()
    os.mkfifo(lock_path(project))
    started = time.monotonic()
    assert_lock_refused(project, run_scheduler(project), "FIFO")
    assert time.monotonic() - started < 30, "opening the FIFO must not wait for a writer"


def test_every_multirun_job_refuses_a_symlinked_lock(make_project: Any, tmp_path: Path) -> None:
    project = make_project(LOCKED)
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"keep\n")
    lock_path(project).symlink_to(victim)
    result = run_scheduler(project, "-m", "+steps.0.arguments.n=1,2")
    assert result.returncode == 70, result.stdout + result.stderr
    assert result.stderr.count(str(lock_path(project))) == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert victim.read_bytes() == b"keep\n"
    assert not (project / "ran.json").exists()


def test_a_plain_run_still_locks_and_leaves_a_regular_lock_file(make_project: Any) -> None:
    project = make_project(LOCKED)
    assert run_scheduler(project).returncode == 0
    lock = lock_path(project)
    assert lock.is_file() and not lock.is_symlink()
    assert lock.read_text().startswith("pid ")
    assert run_scheduler(project).returncode == 0, "the lock file is reused"
