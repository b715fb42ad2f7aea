"""End to end: nothing lost (issue "Nothing lost, nothing let in", reliability part).

A step never outlives the scheduler, nor do the processes it leaves behind; SIGHUP stops a
run as SIGTERM does; summary.json is never left `running` by a scheduler that ended on its
own; a fault of the machine is exit 70 with one line; a timed-out step does not spin the CPU;
a refused run leaves no litter (CONTRACT §4-§7, §9).
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Tuple

import ptyprocess
import pytest
from conftest import (
    OPTIONS,
    PROMPT,
    finish,
    kill_step_processes,
    load_json,
    make_config,
    output_text,
    read_until,
    run_folder,
    run_scheduler,
    scheduler_command,
    scheduler_env,
    started_scheduler,
    step_processes,
    step_statuses,
    summaries,
    sweep_folder,
    terminal_text,
    wait_for_no_step_processes,
)

pytestmark = pytest.mark.e2e

# A step whose arguments (key=value words) choose how it behaves:
#   marker=PATH     append the name of each SIGTERM/SIGINT/SIGHUP it gets to PATH
#   on_signal=exit  then exit 128+N (the default); on_signal=ignore: keep going
#   leave=print|quiet   first start a child in its process group that outlives it: `print`
#                   prints "tick" lines until it is stopped, `quiet` prints nothing (its
#                   output goes to /dev/null); with child_ignores=term it ignores SIGTERM
#   then=wait       print "waiting" and sleep for up to 60 s (the default); then=exit: exit 0
STEP = """\
import os, signal, subprocess, sys, time

args = dict(word.split("=", 1) for word in sys.argv[1:])

def on_signal(signum, frame):
    if "marker" in args:
        with open(args["marker"], "a") as marker:
            marker.write(signal.Signals(signum).name + "\\n")
    if args.get("on_signal", "exit") != "ignore":
        os._exit(128 + signum)

CHILD = '''
import signal, sys, time
if sys.argv[1] == "term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", file=sys.stderr, flush=True)
end = time.monotonic() + 120
while time.monotonic() < end:
    if sys.argv[2] == "print":
        print("tick", flush=True)
    time.sleep(0.01)
'''
if "leave" in args:
    quiet = args["leave"] == "quiet"
    child = subprocess.Popen([sys.executable, "-c", CHILD, args.get("child_ignores", "-"),
                              args["leave"]], stdout=subprocess.DEVNULL if quiet else None,
                             stderr=subprocess.PIPE)
    child.stderr.readline()  # it is ready: its signal handling is in place
for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(signum, on_signal)
if args.get("then", "wait") == "exit":
    sys.exit(0)
print("waiting", flush=True)
end = time.monotonic() + 60
while time.monotonic() < end:
    time.sleep(0.02)
"""


@pytest.fixture(autouse=True)
def _no_procfs_no_test() -> None:
    if not Path("/proc/self/environ").exists():
        pytest.skip("these tests find a step's processes in /proc")


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[Path]:
    """Mount a tmpfs at where (made if missing) for the test; skip where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


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


# ── 4. A step does not outlive the scheduler ─────────────────────────────


def test_kill_9_of_the_scheduler_stops_its_running_step_and_what_it_started(
    make_project: Any,
) -> None:
    project = make_project(
        make_config("- {script: tasks/step.py, arguments: {marker: signals.txt, leave: quiet}}\n"),
        {"step.py": STEP})
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


def test_a_new_run_is_refused_while_a_step_of_a_killed_scheduler_still_runs(
    make_project: Any,
) -> None:
    project = make_project(
        make_config(
            "- script: tasks/step.py\n"
            "  arguments: {marker: signals.txt, on_signal: ignore, then: wait}\n",
            OPTIONS.replace("kill_grace: 1", "kill_grace: 60")),
        {"step.py": STEP})
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
            "01-step.log"]

        os.kill(step, signal.SIGKILL)
        assert wait_for_no_step_processes(project) == []
        deadline = time.monotonic() + 5  # the lock goes with the step's last process
        while True:
            again = run_scheduler(project, "scheduler.resume=true",
                                  "steps.0.arguments.then=exit")
            if again.returncode != 75 or time.monotonic() > deadline:
                break
        assert again.returncode == 0, again.stdout + again.stderr


def test_after_kill_9_a_step_that_ignores_sigterm_is_killed_after_kill_grace(
    make_project: Any,
) -> None:
    project = make_project(
        make_config(
            "- {script: tasks/step.py, arguments: {on_signal: ignore, leave: quiet, "
            "child_ignores: term}}\n"),
        {"step.py": STEP})
    with started_scheduler(project) as proc:
        assert proc.stdout is not None
        read_until(proc.stdout.fileno(), b"waiting\n")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        killed = time.monotonic()
        assert wait_for_no_step_processes(project, timeout=20) == []
        assert 1 - 0.2 <= time.monotonic() - killed < 15  # kill_grace: 1


# ── 5. SIGHUP ────────────────────────────────────────────────────────────

WAITING_THEN_LATER = """\
- {script: tasks/step.py, name: sleeper, arguments: {marker: signals.txt, leave: quiet}}
- {script: tasks/fate.py, name: later, arguments: {record: later.json}}
"""


def test_sighup_during_a_step_stops_it_and_the_run_ends_interrupted_with_129(
    make_project: Any,
) -> None:
    project = make_project(make_config(WAITING_THEN_LATER), {"step.py": STEP})
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
        make_config("- {script: tasks/step.py, arguments: {marker: signals.txt, "
                    "on_signal: ignore}}\n"),
        {"step.py": STEP})
    with started_scheduler(project) as proc:
        assert proc.stdout is not None
        read_until(proc.stdout.fileno(), b"waiting\n")
        proc.send_signal(signal.SIGHUP)
        signalled = time.monotonic()
        output = output_text(proc)
        took = time.monotonic() - signalled
    assert proc.returncode == 129, output
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
    project = make_project(make_config(WAITING_THEN_LATER), {"step.py": STEP})
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


def test_sighup_during_a_multirun_job_stops_the_sweep_there(make_project: Any) -> None:
    project = make_project(
        make_config("- {script: tasks/step.py, arguments: {marker: signals.txt}}\n"),
        {"step.py": STEP})
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


# ── 6. What a step leaves behind ─────────────────────────────────────────


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
            - script: tasks/step.py
              name: leaver
              arguments: {{leave: {leave}, child_ignores: '{child_ignores}', then: exit}}
            - {{script: tasks/fate.py, name: later, arguments: {{record: later.json}}}}
            """),
        {"step.py": STEP})
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
            - script: tasks/step.py
              name: leaver
              timeout: 1
              arguments: {leave: print, child_ignores: term, then: exit}
            """,
            OPTIONS.replace("kill_grace: 1", "kill_grace: 2")),
        {"step.py": STEP})
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
            "- {script: tasks/step.py, arguments: {leave: quiet, child_ignores: term, "
            "then: exit}}\n",
            OPTIONS.replace("kill_grace: 1", "kill_grace: 4")),
        {"step.py": STEP})
    code, cpu = exit_code_and_cpu(project)
    assert code == 0
    assert cpu < 2.5, f"the scheduler used {cpu:.2f}s of CPU"  # a busy wait: 4 s


# ── 7. summary.json is finished whenever the scheduler ends on its own ───


def test_a_full_disk_while_a_step_prints_ends_the_run_failed_with_70(
    make_project: Any,
) -> None:
    project = make_project(
        make_config("- {script: tasks/fate.py, name: chatty, arguments: {bytes: 8388608}}\n"))
    with mounted_tmpfs(project / "outputs", "size=1m"):
        result = run_scheduler(project)
        output = result.stdout + result.stderr
        assert result.returncode == 70, output
        assert "Traceback" not in output
        assert "No space left on device" in result.stderr
        run = run_folder(project)
        summary = load_json(run / "summary.json")
        assert (summary["status"], summary["exit_code"]) == ("failed", 70)
        assert summary["finished"] is not None
        assert step_statuses(summary) == ["interrupted"]
        assert not list(run.glob(".*.tmp"))
        assert step_processes(project) == []


@pytest.mark.parametrize("env, problem", [
    ('{"": 1}', "env has a variable named ''"),
    ('{"A=B": 1}', "env has a variable named 'A=B'"),
    ('{"A\\0B": 1}', "env has a variable named 'A\\x00B'"),
    ('{"A": "x\\0y"}', "env.A must not hold a NUL byte"),
])
def test_env_names_and_values_the_system_refuses_are_config_errors(
    make_project: Any, env: str, problem: str
) -> None:
    project = make_project(make_config(
        f"- {{script: tasks/fate.py, arguments: {{record: ran.json}}, env: {env}}}\n"))
    result = run_scheduler(project)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert f"steps[0] (fate): {problem}" in result.stderr, result.stderr
    assert not (project / "ran.json").exists()
    assert summaries(project) == {}


# ── 8. Faults of the machine are exit 70, with one line ──────────────────


def assert_one_line_fault(result: "subprocess.CompletedProcess[str]", path: Path,
                          reason: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 70, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert str(path) in lines[0] and reason in lines[0], lines[0]


def test_a_read_only_outputs_folder_is_exit_70_with_one_line(make_project: Any) -> None:
    project = make_project(make_config("- {script: tasks/fate.py, arguments: {record: r.json}}\n"))
    with mounted_tmpfs(project / "outputs", "ro"):
        result = run_scheduler(project)
    assert_one_line_fault(result, project / "outputs", "Read-only file system")
    assert not (project / "r.json").exists()


def test_a_full_disk_at_start_is_exit_70_with_one_line(make_project: Any) -> None:
    project = make_project(make_config("- {script: tasks/fate.py, arguments: {record: r.json}}\n"))
    with mounted_tmpfs(project / "outputs", "size=64k") as outputs:
        with contextlib.suppress(OSError), open(outputs / "filler", "wb") as filler:
            while True:
                filler.write(b"x" * 4096)
                filler.flush()
        result = run_scheduler(project)
    assert_one_line_fault(result, project / "outputs", "No space left on device")
    assert not (project / "r.json").exists()


def test_a_read_only_multirun_folder_is_exit_70_with_one_line(make_project: Any) -> None:
    project = make_project(make_config("- {script: tasks/fate.py, arguments: {record: r.json}}\n"))
    with mounted_tmpfs(project / "multirun", "ro"):
        result = run_scheduler(project, "-m", "+steps.0.arguments.x=1,2")
    assert_one_line_fault(result, project / "multirun", "Read-only file system")


# ── 10. A timed-out step does not spin the CPU ───────────────────────────


def test_waiting_out_kill_grace_after_a_timeout_costs_no_cpu(make_project: Any) -> None:
    project = make_project(
        make_config(
            "- {script: tasks/step.py, timeout: 1, arguments: {on_signal: ignore}}\n",
            OPTIONS.replace("kill_grace: 1", "kill_grace: 4")),
        {"step.py": STEP})
    code, cpu = exit_code_and_cpu(project)
    assert code == 124
    # Start-up (Python, Hydra) and the step take well under a second of CPU here; a busy
    # wait through kill_grace took all of its 4 s.
    assert cpu < 2.5, f"the scheduler used {cpu:.2f}s of CPU"


# ── 11. A refused run leaves no litter ───────────────────────────────────


def test_a_run_refused_by_the_lock_leaves_no_run_folder(make_project: Any, tmp_path: Path) -> None:
    project = make_project(make_config("- {script: tasks/step.py}\n"), {"step.py": STEP})
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


def test_a_real_folder_named_latest_leaves_no_temporary_link(make_project: Any) -> None:
    project = make_project(make_config("- {script: tasks/fate.py}\n"))
    (project / "outputs" / "latest").mkdir(parents=True)
    (project / "outputs" / "latest" / "mine.txt").write_text("the user's")
    result = run_scheduler(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [p.name for p in (project / "outputs").iterdir() if p.name.startswith(".latest")] == []
    assert (project / "outputs" / "latest" / "mine.txt").read_text() == "the user's"


@pytest.mark.parametrize("key, hint", [("schedular", "scheduler"), ("step", "steps"),
                                       ("defualt", "default")])
def test_an_unknown_top_level_key_is_a_config_error(make_project: Any, key: str,
                                                    hint: str) -> None:
    project = make_project(
        make_config("- {script: tasks/fate.py, arguments: {record: ran.json}}\n")
        + f"{key}: {{on_failure: continue}}\n")
    result = run_scheduler(project)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert re.search(rf"unknown top-level key '{key}'.*did you mean '{hint}'", result.stderr), \
        result.stderr
    assert not (project / "ran.json").exists()


def test_hydra_and_default_stay_allowed_at_the_top_level(make_project: Any) -> None:
    project = make_project(
        "default:\n  - fate: &fate {script: tasks/fate.py, arguments: {record: ran.json}}\n"
        "hydra:\n  job: {name: mine}\n"
        "steps:\n  - <<: *fate\n")
    result = run_scheduler(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "ran.json").exists()


def test_the_step_processes_helper_sees_a_running_step(make_project: Any) -> None:
    """The tests above trust step_processes() to find a step: check that it does."""
    project = make_project(make_config("- {script: tasks/step.py}\n"), {"step.py": STEP})
    with started_scheduler(project) as proc:
        assert proc.stdout is not None
        read_until(proc.stdout.fileno(), b"waiting\n")
        assert len(step_processes(project)) == 1
    assert sys.platform.startswith("linux")
