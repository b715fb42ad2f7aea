"""End to end: unattended operation: retries, timeouts, signals, the run lock, selection,
resume, dry run, interpreters and launchers, multirun, --help (CONTRACT §2-5, §7)."""

import datetime
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List

import pytest
from conftest import (
    PROMPT,
    ROOT,
    finish,
    kill_group,
    kill_if_alive,
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
    split_log,
    started_scheduler,
    step_statuses,
    summaries,
    sweep_folder,
    terminal_text,
    wait_until_gone,
)

sys.path.insert(0, str(ROOT))

from scheduler import OPTION_KEYS, STEP_KEYS  # noqa: E402

pytestmark = pytest.mark.e2e


# A step that reports the signals it gets, arguments as key=value words:
#   marker=PATH      append the name of each SIGTERM/SIGINT it gets to PATH
#   on_signal=exit   then exit 128+N (the default); on_signal=ignore: keep going
#   grandchild=PATH  first start `sleep 60` in its process group; write that pid to PATH
# then print "waiting" and sleep for up to 60 s.
STUBBORN = """\
import os, signal, subprocess, sys, time

args = dict(word.split("=", 1) for word in sys.argv[1:])
ignore = args.get("on_signal", "exit") == "ignore"

def on_signal(signum, frame):
    with open(args["marker"], "a") as marker:
        marker.write(signal.Signals(signum).name + "\\n")
    if not ignore:
        os._exit(128 + signum)

if "grandchild" in args:
    # Ignored signals stay ignored across exec: the grandchild then only dies of SIGKILL.
    signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore else signal.SIG_DFL)
    sleeper = subprocess.Popen(["sleep", "60"])
    with open(args["grandchild"], "w") as out:
        out.write(str(sleeper.pid))
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
print("waiting", flush=True)
end = time.monotonic() + 60
while time.monotonic() < end:
    time.sleep(0.05)
"""

# A step that writes what it was started with to $TEST_PROBE_OUT: argv, -X options, TEST_* env.
PROBE = """\
import json, os, sys

seen = {
    "argv": sys.argv[1:],
    "xoptions": {str(k): v for k, v in sys._xoptions.items()},
    "env": {k: v for k, v in os.environ.items() if k.startswith("TEST_")},
}
with open(os.environ["TEST_PROBE_OUT"], "w") as out:
    json.dump(seen, out)
"""

# A shell script that writes its arguments, one per line, to sh-args.txt (in the root).
SHELL_TASK = '#!/bin/sh\nprintf "%s\\n" "$0" "$@" > sh-args.txt\n'

SEPARATOR_TIME = re.compile(rb"^=== crude-link: .*attempt (\d+) at (\S+) ===$", re.MULTILINE)


def step_logs(project: Path) -> List[str]:
    """Return the names of every step log under the project's outputs/."""
    return sorted(path.name for path in (project / "outputs").glob("*/*/[0-9][0-9]-*.log"))


# ── Automatic retries ────────────────────────────────────────────────────


def test_retries_run_a_failing_step_again_until_it_succeeds(make_project: Any) -> None:
    project = make_project(
        make_config(
            """\
            - script: tasks/fate.py
              name: flaky
              retries: 2
              arguments: {print: attempt output, fail_times: 2, marker: flaky.count, exit_code: 3}
            - {script: tasks/fate.py, name: next, arguments: {record: next.json}}
            """
        )
    )
    result = run_scheduler(project)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("succeeded", 0)
    flaky = summary["steps"][0]
    assert (flaky["status"], flaky["exit_code"], flaky["attempts"]) == ("succeeded", 0, 3)
    assert split_log(run_folder(project) / "01-flaky.log") == (b"attempt output\n" * 3, [1, 2, 3])
    assert result.stdout.splitlines().count("attempt output") == 3  # every attempt shown live
    assert (project / "next.json").exists()


def test_retries_run_out_and_the_step_fails_with_its_exit_code(make_project: Any) -> None:
    project = make_project(
        make_config(
            """\
            - script: tasks/fate.py
              name: flaky
              retries: 1
              arguments: {print: attempt output, fail_times: 2, marker: flaky.count, exit_code: 3}
            - {script: tasks/fate.py, name: next, arguments: {record: next.json}}
            """
        )
    )
    result = run_scheduler(project)
    assert result.returncode == 3, result.stdout + result.stderr
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("failed", 3)
    flaky = summary["steps"][0]
    assert (flaky["status"], flaky["exit_code"], flaky["attempts"]) == ("failed", 3, 2)
    assert step_statuses(summary) == ["failed", "not_run"]
    assert split_log(run_folder(project) / "01-flaky.log") == (b"attempt output\n" * 2, [1, 2])
    assert (project / "flaky.count").read_text() == "2"
    assert not (project / "next.json").exists()


def test_retry_delay_is_waited_between_attempts(make_project: Any) -> None:
    delay = 1.0
    project = make_project(
        make_config(
            f"""\
            - script: tasks/fate.py
              name: flaky
              retries: 1
              retry_delay: {delay}
              arguments: {{fail_times: 1, marker: flaky.count}}
            """
        )
    )
    began = time.monotonic()
    result = run_scheduler(project)
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed >= delay
    log = (run_folder(project) / "01-flaky.log").read_bytes()
    times = {
        int(n): datetime.datetime.fromisoformat(at.decode())
        for n, at in SEPARATOR_TIME.findall(log)
    }
    assert sorted(times) == [1, 2]
    gap = (times[2] - times[1]).total_seconds()
    assert delay <= gap < delay + 15
    assert load_summary(project)["steps"][0]["attempts"] == 2


# ── Timeouts ─────────────────────────────────────────────────────────────


def test_a_step_past_its_timeout_is_stopped_with_its_process_group_and_exit_code_124(
    make_project: Any,
) -> None:
    project = make_project(
        make_config(
            """\
            - script: tasks/stubborn.py
              name: slow
              timeout: 1
              arguments: {marker: signals.txt, grandchild: grandchild.pid}
            - {script: tasks/fate.py, name: next, arguments: {record: next.json}}
            """
        ),
        {"stubborn.py": STUBBORN},
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
            - script: tasks/stubborn.py
              timeout: 1
              arguments: {marker: signals.txt, on_signal: ignore, grandchild: grandchild.pid}
            """
        ),
        {"stubborn.py": STUBBORN},
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


# ── Signals to the scheduler ─────────────────────────────────────────────

SIGNALLED = """\
- script: tasks/stubborn.py
  name: stubborn
  arguments: {{marker: signals.txt, grandchild: grandchild.pid, on_signal: {on_signal}}}
- {{script: tasks/fate.py, name: later, arguments: {{record: later.json}}}}
"""


def test_sigterm_to_the_scheduler_stops_the_step_and_records_interrupted(
    make_project: Any,
) -> None:
    project = make_project(
        make_config(SIGNALLED.format(on_signal="exit")), {"stubborn.py": STUBBORN}
    )
    with started_scheduler(project) as proc:
        assert proc.stdout is not None
        read_until(proc.stdout.fileno(), b"waiting\n")
        proc.send_signal(signal.SIGTERM)
        output = output_text(proc)
    grandchild = int((project / "grandchild.pid").read_text())
    try:
        assert proc.returncode == 143, output
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
        make_config(SIGNALLED.format(on_signal="ignore")), {"stubborn.py": STUBBORN}
    )
    with started_scheduler(project) as proc:
        assert proc.stdout is not None
        read_until(proc.stdout.fileno(), b"waiting\n")
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        output = output_text(proc)
        took = time.monotonic() - signalled
    grandchild = int((project / "grandchild.pid").read_text())
    try:
        assert proc.returncode == 143, output
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
        make_config(SIGNALLED.format(on_signal="exit")), {"stubborn.py": STUBBORN}
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


def test_ctrl_c_at_the_dialog_aborts_with_130(make_project: Any, spawn_scheduler: Any) -> None:
    project = make_project(
        make_config(
            """\
            - {script: tasks/fate.py, name: broken, arguments: {exit_code: 4}}
            - {script: tasks/fate.py, name: later, arguments: {record: later.json}}
            """
        )
    )
    child = spawn_scheduler(project)
    child.expect(PROMPT)
    child.sendintr()
    assert finish(child) == 130
    assert "Traceback" not in terminal_text(child)
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("aborted", 130)
    assert step_statuses(summary) == ["failed", "not_run"]
    assert summary["steps"][0]["exit_code"] == 4
    assert not (project / "later.json").exists()


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


# ── Selecting steps ──────────────────────────────────────────────────────

THREE_STEPS = """\
- {script: tasks/fate.py, name: a, arguments: {record: a.json}}
- {script: tasks/fate.py, name: b, arguments: {record: b.json}}
- {script: tasks/fate.py, name: c, arguments: {record: c.json}}
"""


@pytest.mark.parametrize(
    "override, ran",
    [
        ("scheduler.from_step=b", "bc"),
        ("scheduler.from_step=2", "bc"),
        ("scheduler.only=[a,c]", "ac"),
        ("scheduler.only=b", "b"),
        ("scheduler.skip=[b]", "ac"),
    ],
)
def test_selection_runs_the_chosen_steps_and_lists_the_others_as_skipped(
    make_project: Any, override: str, ran: str
) -> None:
    project = make_project(make_config(THREE_STEPS))
    result = run_scheduler(project, override)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("succeeded", 0)
    expected = ["succeeded" if name in ran else "skipped" for name in "abc"]
    assert step_statuses(summary) == expected
    for index, name in enumerate("abc", start=1):
        assert (project / f"{name}.json").exists() is (name in ran), name
        log = run_folder(project) / f"{index:02d}-{name}.log"
        assert log.exists() is (name in ran), log
    assert [s["attempts"] for s in summary["steps"]] == [int(n in ran) for n in "abc"]


@pytest.mark.parametrize(
    "overrides, problems",
    [
        (
            ["scheduler.only=[a,nope]", "scheduler.skip=[zz]", "scheduler.from_step=nah"],
            [["only", "'nope'"], ["skip", "'zz'"], ["from_step", "'nah'"]],
        ),
        (
            ["scheduler.only=nope", "scheduler.from_step=4"],
            [["only", "'nope'"], ["from_step", "4"]],
        ),
        (["scheduler.from_step=0"], [["from_step", "0"]]),
    ],
    ids=["names", "single-name-and-index-past-the-end", "index-0"],
)
def test_unknown_steps_in_a_selection_are_config_errors_before_any_step_runs(
    make_project: Any, overrides: List[str], problems: List[List[str]]
) -> None:
    project = make_project(make_config(THREE_STEPS))
    result = run_scheduler(project, *overrides)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    found = []
    for parts in problems:  # every problem, each on its own line
        lines = [line for line in result.stderr.splitlines() if all(p in line for p in parts)]
        assert lines, f"no line with {parts} in:\n{result.stderr}"
        found.append(lines[0])
    assert len(set(found)) == len(problems)
    assert not any((project / f"{name}.json").exists() for name in "abc")
    assert summaries(project) == {}
    assert step_logs(project) == []


# ── Resume ───────────────────────────────────────────────────────────────


def test_resume_starts_at_the_failed_step_and_resuming_a_resumed_run_works(
    make_project: Any,
) -> None:
    # Each step counts its runs in a marker; two and three fail on their first run only.
    project = make_project(
        make_config(
            """\
            - {script: tasks/fate.py, name: one, arguments: {fail_times: 0, marker: one.count}}
            - script: tasks/fate.py
              name: two
              arguments: {fail_times: 1, marker: two.count, exit_code: 3}
            - script: tasks/fate.py
              name: three
              arguments: {fail_times: 1, marker: three.count, exit_code: 4}
            """
        )
    )

    def counts() -> List[str]:
        return [
            (project / f"{name}.count").read_text() if (project / f"{name}.count").exists() else "0"
            for name in ("one", "two", "three")
        ]

    first = run_scheduler(project)
    assert first.returncode == 3, first.stdout + first.stderr
    run1 = run_folder(project)
    assert step_statuses(load_json(run1 / "summary.json")) == ["succeeded", "failed", "not_run"]
    assert counts() == ["1", "1", "0"]

    second = run_scheduler(project, "scheduler.resume=true")
    assert second.returncode == 4, second.stdout + second.stderr
    run2 = new_run(project, {run1})
    assert counts() == ["1", "2", "1"]
    summary2 = load_json(run2 / "summary.json")
    assert step_statuses(summary2) == ["succeeded", "succeeded", "failed"]
    one = summary2["steps"][0]
    assert (one["attempts"], one["exit_code"], one["reused_from"]) == (0, 0, str(run1))
    assert [s["attempts"] for s in summary2["steps"]] == [0, 1, 1]
    assert not (run2 / "01-one.log").exists()

    third = run_scheduler(project, "scheduler.resume=true")
    assert third.returncode == 0, third.stdout + third.stderr
    run3 = new_run(project, {run1, run2})
    assert counts() == ["1", "2", "2"]
    summary3 = load_json(run3 / "summary.json")
    assert (summary3["status"], summary3["exit_code"]) == ("succeeded", 0)
    assert step_statuses(summary3) == ["succeeded"] * 3
    assert [s["attempts"] for s in summary3["steps"]] == [0, 0, 1]
    assert [s.get("reused_from") for s in summary3["steps"]] == [str(run1), str(run2), None]

    fourth = run_scheduler(project, "scheduler.resume=true")
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert "nothing to resume" in fourth.stdout + fourth.stderr
    assert "Traceback" not in fourth.stdout + fourth.stderr
    assert counts() == ["1", "2", "2"]
    assert set(summaries(project)) == {run1, run2, run3}  # no new run recorded


def test_a_resumed_run_reads_the_files_of_the_run_it_resumes(make_project: Any) -> None:
    project = make_project(
        make_config(
            """\
            - script: tasks/fate.py
              name: write
              arguments: {record: "${hydra:runtime.output_dir}/written.json"}
            - script: tasks/consume.py
              name: read
              arguments: {source: "${hydra:runtime.output_dir}/written.json", fail: false}
            """
        ),
        {
            "consume.py": """\
            import shutil, sys
            from omegaconf import OmegaConf
            args = OmegaConf.from_cli()
            if args.fail:
                sys.exit(3)
            shutil.copy(args.source, "copied.json")
            """
        },
    )
    first = run_scheduler(project, "steps.1.arguments.fail=true")
    assert first.returncode == 3, first.stdout + first.stderr
    run1 = run_folder(project)
    assert (run1 / "written.json").exists()

    second = run_scheduler(project, "scheduler.resume=true")
    assert second.returncode == 0, second.stdout + second.stderr
    run2 = new_run(project, {run1})
    summary = load_json(run2 / "summary.json")
    assert summary["output_dir"] == str(run1)
    assert step_statuses(summary) == ["succeeded", "succeeded"]
    assert summary["steps"][0]["reused_from"] == str(run1)
    assert summary["steps"][1]["command"][-2] == f"source={run1}/written.json"
    copied = load_json(project / "copied.json")
    assert copied["env"]["CRUDE_LINK_RUN_DIR"] == str(run1)  # written by run 1's step
    assert (run2 / "02-read.log").exists()


def test_resume_after_a_kill_9_starts_at_the_step_that_was_running(
    make_project: Any, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    project = make_project(
        make_config(
            f"""\
            - {{script: tasks/fate.py, name: one, arguments: {{fail_times: 0, marker: one.count}}}}
            - script: tasks/fate.py
              name: two
              arguments: {{record: two.json, wait_for: {go}, fail_times: 0, marker: two.count}}
            - {{script: tasks/fate.py, name: three, arguments: {{record: three.json}}}}
            """
        )
    )
    with started_scheduler(project) as proc:
        assert proc.stdout is not None
        read_until(proc.stdout.fileno(), b"waiting\n")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    kill_group(load_json(project / "two.json")["pid"])
    run1 = run_folder(project)
    assert step_statuses(load_json(run1 / "summary.json")) == ["succeeded", "running", "not_run"]
    go.touch()
    result = run_scheduler(project, "scheduler.resume=true")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = load_json(new_run(project, {run1}) / "summary.json")
    assert step_statuses(summary) == ["succeeded"] * 3
    assert [s["attempts"] for s in summary["steps"]] == [0, 1, 1]
    assert summary["steps"][0]["reused_from"] == str(run1)
    assert (project / "one.count").read_text() == "1"
    assert (project / "two.count").read_text() == "1"  # run 1 was killed before it counted
    assert (project / "three.json").exists()


def test_resume_without_an_earlier_run_is_an_error(make_project: Any) -> None:
    project = make_project(make_config(THREE_STEPS))
    result = run_scheduler(project, "scheduler.resume=true")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "resume" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not any((project / f"{name}.json").exists() for name in "abc")
    assert summaries(project) == {}


# ── Dry run ──────────────────────────────────────────────────────────────


def test_dry_run_prints_the_commands_the_real_run_executes_and_runs_nothing(
    make_project: Any,
) -> None:
    project = make_project(
        make_config(
            """\
            - script: tasks/fate.py
              name: first
              env: {TEST_DRY: hello world}
              arguments:
                record: first.json
                text: it's "quoted" $HOME *
                items: [1, "x,y"]
                opt: {lr: 0.1}
            - {script: tasks/fate.py, name: left_out, arguments: {record: left_out.json}}
            - script: tasks/run.sh
              name: third
              interpreter: sh
              launcher: [env, TEST_LAUNCHED=1]
              arguments: {who: a b, empty: ""}
            """
        ),
        {"run.sh": SHELL_TASK},
    )
    dry = run_scheduler(project, "scheduler.dry_run=true", "scheduler.skip=[left_out]")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert not (project / "first.json").exists()
    assert not (project / "sh-args.txt").exists()
    assert summaries(project) == {}
    lines = dry.stdout.splitlines()
    printed = [shlex.split(line.split("command:", 1)[1]) for line in lines if "command:" in line]
    assert any("cwd:" in line and str(project) in line for line in lines)
    env_words = [w for line in lines if "env:" in line for w in shlex.split(line.split("env:")[1])]
    assert "TEST_DRY=hello world" in env_words
    assert "left_out" not in dry.stdout

    real = run_scheduler(project, "scheduler.skip=[left_out]")
    assert real.returncode == 0, real.stdout + real.stderr
    steps = load_summary(project)["steps"]
    assert printed == [steps[0]["command"], steps[2]["command"]]
    assert load_json(project / "first.json")["args"]["text"] == 'it\'s "quoted" $HOME *'


# ── How a step is started: interpreter, launcher, argument_format ────────


def test_interpreter_as_a_string_and_as_a_list(make_project: Any) -> None:
    project = make_project(
        make_config(
            f"""\
            - {{script: tasks/run.sh, name: shell, interpreter: sh, arguments: {{who: a b}}}}
            - script: tasks/probe.py
              name: probe
              interpreter: [{sys.executable}, -X, utf8]
              env: {{TEST_PROBE_OUT: probe.json}}
              arguments: {{n: 1}}
            """
        ),
        {"run.sh": SHELL_TASK, "probe.py": PROBE},
    )
    script = project / "tasks" / "run.sh"
    assert not script.stat().st_mode & stat.S_IXUSR  # sh needs no x bit
    result = run_scheduler(project)
    assert result.returncode == 0, result.stdout + result.stderr
    shell, probe = load_summary(project)["steps"]
    assert shell["command"] == ["sh", str(script), "who='a b'"]
    assert (project / "sh-args.txt").read_text() == f"{script}\nwho='a b'\n"
    probe_py = str(project / "tasks" / "probe.py")
    assert probe["command"] == [sys.executable, "-X", "utf8", probe_py, "n=1"]
    seen = load_json(project / "probe.json")
    assert seen["xoptions"] == {"utf8": True}
    assert seen["argv"] == ["n=1"]


def test_launchers_wrap_the_step_and_a_steps_own_wins_even_when_empty(
    make_project: Any,
) -> None:
    project = make_project(
        make_config(
            """\
            - {script: tasks/fate.py, name: plain, arguments: {record: plain.json}}
            - script: tasks/fate.py
              name: own
              launcher: [env, TEST_LAUNCHED=own]
              arguments: {record: own.json}
            - {script: tasks/fate.py, name: none, launcher: [], arguments: {record: none.json}}
            """
        )
    )
    # The default launcher comes from the command line, as the README shows it.
    result = run_scheduler(project, "scheduler.launcher=[env,'TEST_LAUNCHED=default']")
    assert result.returncode == 0, result.stdout + result.stderr
    fate = [sys.executable, str(project / "tasks" / "fate.py")]
    assert [s["command"] for s in load_summary(project)["steps"]] == [
        ["env", "TEST_LAUNCHED=default", *fate, "record=plain.json"],
        ["env", "TEST_LAUNCHED=own", *fate, "record=own.json"],
        [*fate, "record=none.json"],
    ]
    assert load_json(project / "plain.json")["env"].get("TEST_LAUNCHED") == "default"
    assert load_json(project / "own.json")["env"].get("TEST_LAUNCHED") == "own"
    assert "TEST_LAUNCHED" not in load_json(project / "none.json")["env"]


def test_argument_format_shapes_each_argument(make_project: Any) -> None:
    project = make_project(
        make_config(
            """\
            - script: tasks/probe.py
              argument_format: "--{key}={value}"
              env: {TEST_PROBE_OUT: probe.json}
              arguments: {lr: 0.1, name: a b, opt: {depth: 3}, flag: true}
            """
        ),
        {"probe.py": PROBE},
    )
    result = run_scheduler(project)
    assert result.returncode == 0, result.stdout + result.stderr
    argv = ["--lr=0.1", "--name='a b'", "--opt.depth=3", "--flag=true"]
    assert load_json(project / "probe.json")["argv"] == argv
    assert load_summary(project)["steps"][0]["command"][2:] == argv


def test_a_script_without_interpreter_must_be_executable(make_project: Any) -> None:
    project = make_project(
        make_config("- {script: tasks/run.sh, name: shell, arguments: {who: a b}}"),
        {"run.sh": SHELL_TASK},
    )
    refused = run_scheduler(project)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert any(
        "tasks/run.sh" in line and "executable" in line for line in refused.stderr.splitlines()
    )
    assert not (project / "sh-args.txt").exists()
    script = project / "tasks" / "run.sh"
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    result = run_scheduler(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_summary(project)["steps"][0]["command"] == [str(script), "who='a b'"]
    assert (project / "sh-args.txt").read_text() == f"{script}\nwho='a b'\n"


# ── Multirun ─────────────────────────────────────────────────────────────

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
    assert result.returncode != 0, result.stdout + result.stderr
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


# ── Help ─────────────────────────────────────────────────────────────────


def test_help_lists_every_step_key_and_scheduler_option(make_project: Any) -> None:
    project = make_project(make_config(THREE_STEPS))
    result = run_scheduler(project, "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "crude-link" in result.stdout
    for key in sorted(STEP_KEYS):
        assert re.search(rf"^\s+{key}\s", result.stdout, re.MULTILINE), key
    for key in sorted(OPTION_KEYS):
        assert re.search(rf"^\s+{key}\s", result.stdout, re.MULTILINE), key
    assert "--hydra-help" in result.stdout
    assert "== Flags ==" not in result.stdout  # Hydra's own help is elsewhere
    assert not (project / "a.json").exists()
    assert summaries(project) == {}


def test_hydra_help_still_shows_hydras_help(make_project: Any) -> None:
    project = make_project(make_config(THREE_STEPS))
    result = run_scheduler(project, "--hydra-help")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "== Flags ==" in result.stdout
    assert "--multirun,-m" in result.stdout
    assert not (project / "a.json").exists()
