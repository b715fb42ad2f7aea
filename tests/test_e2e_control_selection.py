"""End to end: which steps run, and how often (README "Choosing steps", "Scheduler options").

Automatic retries and their delay, from_step / only / skip, resume (from a failed or a killed
run, reading the files of the run it resumes), and the dry run.
"""

import datetime
import os
import re
import shlex
import signal
import time
from pathlib import Path
from typing import Any, List

import pytest
from conftest import (
    SHELL_TASK,
    THREE_STEPS,
    kill_group,
    load_json,
    load_summary,
    make_config,
    new_run,
    read_until,
    run_folder,
    run_scheduler,
    split_log,
    started_scheduler,
    step_logs,
    step_statuses,
    summaries,
)

pytestmark = pytest.mark.e2e


# ── Automatic retries ────────────────────────────────────────────────────


SEPARATOR_TIME = re.compile(rb"^=== crude-link: .*attempt (\d+) at (\S+) ===$", re.MULTILINE)


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


# ── Selecting steps ──────────────────────────────────────────────────────


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
            - script: tasks/fate.py
              name: read
              arguments:
                copy_from: "${hydra:runtime.output_dir}/written.json"
                copy_to: copied.json
                exit_code: 0
            """
        )
    )
    # The failed run copies to a file of its own: copied.json is the resumed run's.
    first = run_scheduler(project, "steps.1.arguments.exit_code=3",
                          "steps.1.arguments.copy_to=first-copy.json")
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
    assert f"copy_from={run1}/written.json" in summary["steps"][1]["command"]
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
