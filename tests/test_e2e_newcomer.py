"""End to end: what a newcomer trips over (issue 14): options in their own config, the dialog's
end of input and skip, how a timeout and a SIGKILL read."""

import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import PROMPT, finish, load_summary, run_folder, run_scheduler, terminal_text

pytestmark = pytest.mark.e2e

NO_OPTIONS = """\
steps:
  - {name: first, script: tasks/fate.py, arguments: {record: first.json}}
"""

SOME_OPTIONS = """\
scheduler:
  on_failure: abort
steps:
  - {name: first, script: tasks/fate.py, arguments: {record: first.json}}
"""


@pytest.mark.parametrize("config", [NO_OPTIONS, SOME_OPTIONS], ids=["none", "some"])
def test_an_option_needs_no_plus_in_a_config_of_ones_own(
        make_project: Callable[..., Path], config: str) -> None:
    project = make_project(config)
    result = run_scheduler(project, "scheduler.dry_run=true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "command:" in result.stdout
    assert not (project / "first.json").exists()  # a dry run: nothing ran


@pytest.mark.parametrize("config", [NO_OPTIONS, SOME_OPTIONS], ids=["none", "some"])
def test_cfg_job_shows_the_option_set(make_project: Callable[..., Path], config: str) -> None:
    project = make_project(config)
    result = run_scheduler(project, "--cfg", "job", "scheduler.quiet=true",
                           "scheduler.on_failure=continue")
    assert result.returncode == 0, result.stderr
    assert "  quiet: true" in result.stdout
    assert "  on_failure: continue" in result.stdout
    assert "++" not in result.stdout


def test_a_sweep_over_an_option_the_config_lacks(make_project: Callable[..., Path]) -> None:
    project = make_project(NO_OPTIONS)
    result = run_scheduler(project, "-m", "scheduler.dry_run=true,false")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "command:" in result.stdout  # job 0, the dry run, printed its command
    assert json.loads((project / "first.json").read_text())["args"] == {"record": "first.json"}
    assert len(list(project.glob("multirun/*/*/[01]"))) == 2


def test_a_misspelt_option_is_crude_links_error(make_project: Callable[..., Path]) -> None:
    project = make_project(NO_OPTIONS)
    result = run_scheduler(project, "scheduler.dry_rn=true")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "unknown key 'dry_rn' (did you mean 'dry_run'?)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "first.json").exists()


FAILING = """\
steps:
  - {name: broken, script: tasks/fate.py, arguments: {exit_code: 3}}
  - {name: after, script: tasks/fate.py, arguments: {record: after.json}}
"""


def test_end_of_input_at_the_dialog_says_it_aborts(
        make_project: Callable[..., Path], spawn_scheduler: Callable[..., Any]) -> None:
    project = make_project(FAILING)
    child = spawn_scheduler(project)
    child.expect(PROMPT)
    child.sendeof()
    assert finish(child) == 3
    assert "end of input at the prompt: aborting" in terminal_text(child)
    assert not (project / "after.json").exists()


def test_a_step_skipped_at_the_dialog_is_marked(
        make_project: Callable[..., Path], spawn_scheduler: Callable[..., Any]) -> None:
    project = make_project(FAILING)
    child = spawn_scheduler(project)
    child.expect(PROMPT)
    child.sendline("s")
    assert finish(child) == 3
    assert "failed (skipped)" in terminal_text(child)
    steps = load_summary(project)["steps"]
    assert [step["status"] for step in steps] == ["failed", "succeeded"]  # contract's values
    assert steps[0].get("skipped_at_dialog") is True
    assert "skipped_at_dialog" not in steps[1]


def test_a_step_skipped_by_on_failure_continue_is_not_marked(
        make_project: Callable[..., Path]) -> None:
    project = make_project(FAILING)
    result = run_scheduler(project, "scheduler.on_failure=continue")
    assert result.returncode == 3
    assert "(skipped)" not in result.stdout + result.stderr
    assert "skipped_at_dialog" not in load_summary(project)["steps"][0]


STUBBORN = """\
scheduler: {kill_grace: 0.5}
steps:
  - name: stubborn
    script: tasks/fate.py
    timeout: 1
    arguments: {ignore_term: true, sleep: 30}
"""


def test_a_timeout_reads_clearly_and_the_sigkill_is_logged(
        make_project: Callable[..., Path]) -> None:
    project = make_project(STUBBORN)
    result = run_scheduler(project)
    output = result.stdout + result.stderr
    assert result.returncode == 124, output
    assert "timed out after 1s (exit code 124); stopped after" in output
    assert ") after" not in output
    folder = run_folder(project)
    said = "was still running 0.5s after SIGTERM (kill_grace): sent SIGKILL"
    assert said in (folder / "01-stubborn.log").read_text()
    assert said in (folder / "scheduler.log").read_text()


def test_no_sigkill_is_logged_when_sigterm_was_enough(make_project: Callable[..., Path]) -> None:
    project = make_project(STUBBORN.replace("ignore_term: true, ", ""))
    result = run_scheduler(project)
    assert result.returncode == 124, result.stdout + result.stderr
    folder = run_folder(project)
    assert "SIGKILL" not in (folder / "01-stubborn.log").read_text()
    assert "SIGKILL" not in (folder / "scheduler.log").read_text()


OUTPUT_DIR = """\
steps:
  - {name: first, script: tasks/fate.py, arguments: {out: "${hydra:runtime.output_dir}/out.csv"}}
"""


def test_cfg_job_resolve_shows_the_run_folder(make_project: Callable[..., Path]) -> None:
    project = make_project(OUTPUT_DIR)
    result = run_scheduler(project, "--cfg", "job", "--resolve")
    assert result.returncode == 0, result.stderr
    assert "None/" not in result.stdout
    assert re.search(rf"out: {re.escape(str(project))}/outputs/\d{{4}}-\d\d-\d\d/"
                     rf"\d\d-\d\d-\d\d-\d+/out.csv", result.stdout), result.stdout
    assert not (project / "outputs").exists() or not any((project / "outputs").rglob("*.log"))


def test_cfg_job_resolve_with_a_run_folder_of_ones_own(
        make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(OUTPUT_DIR)
    result = run_scheduler(project, "--cfg", "job", "--resolve", f"hydra.run.dir={tmp_path}/r")
    assert result.returncode == 0, result.stderr
    assert "out: <the run folder>/out.csv" in result.stdout
