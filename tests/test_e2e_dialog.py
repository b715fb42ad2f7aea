"""End to end: a failed step, the failure policy and the dialog (README "When a step fails").

The warning, on_failure ask / abort / continue, automatic retries before the policy, the
dialog's answers on a real terminal (pexpect), what ends it, and colour.
"""

import re
import subprocess
from pathlib import Path
from typing import Any, List

import pytest
from conftest import (
    ANSI,
    PROMPT,
    cron_env,
    finish,
    load_summary,
    run_folder,
    run_scheduler,
    split_log,
    started_scheduler,
    step_statuses,
    terminal_text,
)

pytestmark = pytest.mark.e2e


# A step that fails with exit code 3 (the first time only, with fail_times), then one that
# records that it ran.
FAIL_THEN_NEXT = """\
scheduler:
  on_failure: ask
steps:
  - script: tasks/fate.py
    name: flaky
    arguments: {{lines: 3, exit_code: 3, {fate}}}
  - script: tasks/fate.py
    name: next
    arguments: {{record: next.json}}
"""


def fail_then_next(make_project: Any, fate: str = "print: bye") -> Path:
    """Return a project whose first step fails with exit code 3 (fate: extra arguments)."""
    return make_project(FAIL_THEN_NEXT.format(fate=fate))


def flaky_then_next(make_project: Any) -> Path:
    """Return a project whose first step fails once with exit code 3, then succeeds."""
    return fail_then_next(make_project, "fail_times: 1, marker: flaky.count")


def warning_lines(output: str, mark: str) -> List[str]:
    """Return the output's lines from the first one that holds mark (say, "exit code 3")."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if mark in line), None)
    assert start is not None, f"no line with {mark!r} in:\n{output}"
    return lines[start:]


# ── Without a terminal ───────────────────────────────────────────────────


def test_warning_names_the_step_its_exit_code_duration_log_and_last_lines(
    make_project: Any,
) -> None:
    project = fail_then_next(make_project)
    result = run_scheduler(project)
    assert result.returncode == 3
    first, *rest = warning_lines(result.stdout, "exit code 3")
    assert "flaky" in first
    assert re.search(r"\d(\.\d+)?\s?m?s\b", first)  # the duration
    after = "\n".join(rest)
    assert str(run_folder(project) / "01-flaky.log") in after
    for line in ("line 1", "line 2", "line 3"):  # the last lines of the step's output
        assert line in after
    assert "Traceback" not in result.stdout + result.stderr


def test_without_a_terminal_ask_aborts_at_once_and_says_so(make_project: Any) -> None:
    project = fail_then_next(make_project)
    # stdin stays open and silent: a scheduler that waited for an answer would hang.
    with (project.parent / "output.txt").open("w+") as output_file:
        with started_scheduler(project, stdin=subprocess.PIPE, stdout=output_file) as proc:
            assert proc.wait(timeout=60) == 3
        output_file.seek(0)
        output = output_file.read()
    assert "no terminal" in output
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("failed", 3)
    assert step_statuses(summary) == ["failed", "not_run"]
    assert summary["steps"][0]["exit_code"] == 3
    assert not (project / "next.json").exists()


def test_in_cron_a_failed_step_stops_the_run_with_its_exit_code(
    make_project: Any, tmp_path: Path
) -> None:
    project = fail_then_next(make_project)
    home = tmp_path / "home"
    home.mkdir()
    result = run_scheduler(project, cwd=Path("/"), env=cron_env(home))
    assert result.returncode == 3, result.stderr
    assert "no terminal" in result.stdout + result.stderr
    assert step_statuses(load_summary(project)) == ["failed", "not_run"]


@pytest.mark.parametrize("signum, name", [(9, "SIGKILL"), (15, "SIGTERM")])
def test_a_step_killed_by_a_signal_exits_128_plus_n(
    make_project: Any, signum: int, name: str
) -> None:
    project = fail_then_next(make_project, f"signal: {signum}")
    result = run_scheduler(project)
    assert result.returncode == 128 + signum
    assert warning_lines(result.stdout, name)[0].count("flaky") == 1
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("failed", 128 + signum)
    assert summary["steps"][0]["exit_code"] == 128 + signum
    assert step_statuses(summary) == ["failed", "not_run"]


def test_on_failure_abort_stops_without_asking_even_on_a_terminal(
    make_project: Any, spawn_scheduler: Any
) -> None:
    project = fail_then_next(make_project)
    child = spawn_scheduler(project, "scheduler.on_failure=abort")
    assert finish(child) == 3
    assert "[r]" not in terminal_text(child)
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("failed", 3)
    assert step_statuses(summary) == ["failed", "not_run"]
    assert not (project / "next.json").exists()


def test_on_failure_continue_runs_the_rest_and_exits_with_the_first_failure(
    make_project: Any,
) -> None:
    project = make_project(
        """\
        scheduler: {on_failure: continue}
        steps:
          - {script: tasks/fate.py, name: a, arguments: {exit_code: 5}}
          - {script: tasks/fate.py, name: b, arguments: {record: b.json}}
          - {script: tasks/fate.py, name: c, arguments: {exit_code: 6}}
          - {script: tasks/fate.py, name: d, arguments: {record: d.json}}
        """
    )
    result = run_scheduler(project)
    assert result.returncode == 5
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("failed", 5)
    assert step_statuses(summary) == ["failed", "succeeded", "failed", "succeeded"]
    assert [s["exit_code"] for s in summary["steps"]] == [5, 0, 6, 0]
    assert (project / "b.json").exists() and (project / "d.json").exists()


def test_automatic_retries_come_before_the_failure_policy(make_project: Any) -> None:
    project = make_project(
        """\
        scheduler: {on_failure: abort}
        steps:
          - script: tasks/fate.py
            name: flaky
            retries: 2
            arguments: {fail_times: 2, marker: flaky.count, exit_code: 9, progress: 2}
          - script: tasks/fate.py
            name: hopeless
            retries: 1
            arguments: {fail_times: 5, marker: hopeless.count, exit_code: 8}
          - {script: tasks/fate.py, name: last}
        """
    )
    result = run_scheduler(project)
    assert result.returncode == 8
    summary = load_summary(project)
    assert step_statuses(summary) == ["succeeded", "failed", "not_run"]
    assert [s["attempts"] for s in summary["steps"]] == [3, 2, 0]
    output, attempts = split_log(run_folder(project) / "01-flaky.log")
    assert attempts == [1, 2, 3]
    # Each separator starts on a line of its own, even after output with no newline.
    assert output.replace(b"\n", b"") == b"\rprogress 1/2\rprogress 2/2" * 3
    assert split_log(run_folder(project) / "02-hopeless.log")[1] == [1, 2]


# ── The dialog, on a real terminal ───────────────────────────────────────


def answer(spawn_scheduler: Any, project: Path, *replies: str) -> Any:
    """Start the scheduler on a terminal and answer each dialog prompt in turn."""
    child = spawn_scheduler(project)
    for reply in replies:
        child.expect(PROMPT)
        child.sendline(reply)
    return child


@pytest.mark.parametrize("reply", ["r", "RETRY"])
def test_dialog_retry_runs_the_step_again(
    make_project: Any, spawn_scheduler: Any, reply: str
) -> None:
    project = flaky_then_next(make_project)
    child = spawn_scheduler(project)
    child.expect("exit code 3")  # the warning comes before the prompt
    child.expect(PROMPT)
    child.sendline(reply)
    assert finish(child) == 0
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("succeeded", 0)
    assert step_statuses(summary) == ["succeeded", "succeeded"]
    assert summary["steps"][0]["attempts"] == 2
    output, attempts = split_log(run_folder(project) / "01-flaky.log")
    assert attempts == [1, 2]
    assert output == b"line 1\nline 2\nline 3\n" * 2


@pytest.mark.parametrize("reply", ["p", "pipeline", "Rerun"])
def test_dialog_pipeline_reruns_from_the_first_step(
    make_project: Any, spawn_scheduler: Any, reply: str
) -> None:
    project = make_project(
        """\
        steps:
          - {script: tasks/fate.py, name: first, arguments: {print: first}}
          - script: tasks/fate.py
            name: flaky
            arguments: {fail_times: 1, marker: flaky.count, exit_code: 4}
          - {script: tasks/fate.py, name: last, arguments: {print: last}}
        """
    )
    child = answer(spawn_scheduler, project, reply)
    assert finish(child) == 0
    run = run_folder(project)
    assert split_log(run / "01-first.log") == (b"first\nfirst\n", [1, 2])
    assert split_log(run / "02-flaky.log")[1] == [1, 2]
    assert split_log(run / "03-last.log") == (b"last\n", [1])
    summary = load_summary(project)
    assert summary["status"] == "succeeded"
    assert [s["attempts"] for s in summary["steps"]] == [2, 2, 1]


@pytest.mark.parametrize("reply", ["s", "SKIP"])
def test_dialog_skip_goes_on_and_the_run_fails_with_the_steps_code(
    make_project: Any, spawn_scheduler: Any, reply: str
) -> None:
    project = fail_then_next(make_project)
    child = answer(spawn_scheduler, project, reply)
    assert finish(child) == 3
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("failed", 3)
    assert step_statuses(summary) == ["failed", "succeeded"]
    assert (project / "next.json").exists()


@pytest.mark.parametrize("reply", ["a", "Abort"])
def test_dialog_abort_stops_and_the_run_is_aborted(
    make_project: Any, spawn_scheduler: Any, reply: str
) -> None:
    project = fail_then_next(make_project)
    child = answer(spawn_scheduler, project, reply)
    assert finish(child) == 3
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("aborted", 3)
    assert step_statuses(summary) == ["failed", "not_run"]
    assert not (project / "next.json").exists()


def test_dialog_asks_again_after_anything_else(make_project: Any, spawn_scheduler: Any) -> None:
    project = flaky_then_next(make_project)
    child = answer(spawn_scheduler, project, "x", "", "retr", "r")
    assert finish(child) == 0
    assert terminal_text(child).count("[a]") == 4
    assert load_summary(project)["steps"][0]["attempts"] == 2


@pytest.mark.parametrize(
    "key, exit_code", [("eof", 3), ("ctrl-c", 130)], ids=["end-of-input", "ctrl-c"]
)
def test_end_of_input_or_ctrl_c_at_the_prompt_aborts(
    make_project: Any, spawn_scheduler: Any, key: str, exit_code: int
) -> None:
    project = fail_then_next(make_project)
    child = spawn_scheduler(project)
    child.expect(PROMPT)
    if key == "eof":
        child.sendeof()
    else:
        child.sendintr()
    assert finish(child) == exit_code
    assert "Traceback" not in terminal_text(child)
    summary = load_summary(project)
    assert (summary["status"], summary["exit_code"]) == ("aborted", exit_code)
    assert step_statuses(summary) == ["failed", "not_run"]
    assert summary["steps"][0]["exit_code"] == 3
    assert not (project / "next.json").exists()


# ── Colour ───────────────────────────────────────────────────────────────


@pytest.mark.parametrize("color", [True, False], ids=["colour", "NO_COLOR"])
def test_colour_on_the_terminal_only_and_never_with_no_color(
    make_project: Any, spawn_scheduler: Any, color: bool
) -> None:
    project = fail_then_next(make_project)
    child = spawn_scheduler(project, "scheduler.on_failure=abort", color=color)
    assert finish(child) == 3
    screen = terminal_text(child)
    assert (ANSI in warning_lines(screen, "exit code 3")[0]) is color
    if not color:
        assert ANSI not in screen
    run = run_folder(project)
    assert "\x1b" not in (run / "scheduler.log").read_text(encoding="utf-8")
    assert "\x1b" not in (run / "summary.json").read_text(encoding="utf-8")
    assert "exit code 3" in (run / "scheduler.log").read_text(encoding="utf-8")
