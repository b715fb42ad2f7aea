"""End to end: --help, --hydra-help and --info in a project folder full of other things.

Hydra takes every folder under the config folder for a config group and walks them all for
the help's listing. crude-link's config source skips what can hold no config group: hidden
folders (.venv, .git), outputs/ and multirun/ beside config.yaml, virtual environments and
run folders. A symlink loop in each of them proves it, untimed: Hydra would walk it until
the path grew too long. (How fast: tests/benchmarks/bench.py, help against a dry run.)
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest
from conftest import run_scheduler, scheduler_command, scheduler_env

pytestmark = pytest.mark.e2e

CONFIG = """\
defaults:
  - db: postgresql
  - _self_
"""

# A config group as in Hydra's tutorials: one YAML file per option, beside config.yaml.
DB_OPTIONS = {
    name: ("# @package _global_\n"
           "steps:\n"
           f"  - {{name: load, script: tasks/fate.py, "
           f"arguments: {{record: ran.json, driver: {name}}}}}\n")
    for name in ("mysql", "postgresql")
}

RUNS = 200  # run folders under outputs/ (the benchmark has 5,000)


def clutter(folder: Path) -> None:
    """Fill a folder as a project's would be after a while, with a symlink loop in each part."""
    for number in range(RUNS):
        run = folder / "outputs" / "2024-01-01" / f"10-00-00-{number}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text("steps: []\n")
        (run / "summary.json").write_text("{}\n")
        (run / "metrics.yaml").write_text("loss: 1\n")  # a step's output: no config option
    (folder / "outputs" / "2024-01-01" / "loop").symlink_to("..")
    deep = folder / "multirun" / "2024-01-01" / "10-00-00-1" / "0" / ".hydra"
    deep.mkdir(parents=True)
    (deep.parent / "loop").symlink_to("..")
    for venv in (".venv", "venv"):  # the second one not hidden: its pyvenv.cfg tells
        packages = folder / venv / "lib" / "python3.11" / "site-packages"
        for number in range(30):
            (packages / f"pkg{number}" / "conf").mkdir(parents=True)
            (packages / f"pkg{number}" / "conf" / "default.yaml").write_text("a: 1\n")
        (folder / venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
        (packages / "loop").symlink_to("..")
    old_run = folder / "archive" / "2023-run"  # a run folder moved elsewhere
    old_run.mkdir(parents=True)
    (old_run / "summary.json").write_text("{}\n")
    (old_run / "config.yaml").write_text("steps: []\n")
    (old_run / "loop").symlink_to("..")


@pytest.fixture
def project(make_project: Callable[..., Path]) -> Path:
    folder = make_project(CONFIG)
    (folder / "db").mkdir()
    for name, text in DB_OPTIONS.items():
        (folder / "db" / f"{name}.yaml").write_text(text)
    clutter(folder)
    return folder


@pytest.mark.parametrize("flag, expected", [
    ("--help", "Step keys (each item of steps:)"),
    ("--hydra-help", "== Flags =="),
    ("--info", "Defaults List"),
])
def test_help_works_in_a_cluttered_project(project: Path, flag: str, expected: str) -> None:
    result = run_scheduler(project, flag)
    assert result.returncode == 0, result.stdout + result.stderr
    assert expected in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_hydra_help_lists_the_real_config_groups_only(project: Path) -> None:
    result = run_scheduler(project, "--hydra-help")
    assert result.returncode == 0, result.stderr
    groups = result.stdout.split("== The app's configuration groups ==", 1)[1]
    listed = [line.split(":")[0] for line in groups.splitlines() if ": " in line]
    assert listed == ["db"], groups
    assert "db: mysql, postgresql" in groups


def test_a_config_group_can_be_selected(project: Path) -> None:
    result = run_scheduler(project, "db=mysql")
    assert result.returncode == 0, result.stdout + result.stderr
    received = json.loads((project / "ran.json").read_text())
    assert received["args"]["driver"] == "mysql"


def test_the_default_option_of_a_group_is_composed(project: Path) -> None:
    result = run_scheduler(project, "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "driver: postgresql" in result.stdout


def test_a_folder_that_is_not_a_group_cannot_be_selected(project: Path) -> None:
    (project / "outputs" / "old.yaml").write_text("a: 1\n")
    result = run_scheduler(project, "outputs=old")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "ran.json").exists()


def test_help_from_another_folder_under_cron_like_env(project: Path, tmp_path: Path) -> None:
    result = run_scheduler(project, "--hydra-help", cwd=Path("/"),
                           env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                "NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    assert "db: mysql, postgresql" in result.stdout
    assert os.path.isdir(project / "outputs")


def clean_copy(project: Path, name: str, with_group: bool) -> Path:
    """Return a project beside this one with its scheduler and config and no clutter: a
    name as long as the project's, so that --info's tables come out as wide."""
    assert len(name) == len(project.name)
    folder = project.parent / name
    folder.mkdir()
    shutil.copy(project / "scheduler.py", folder)
    shutil.copytree(project / "tasks", folder / "tasks")
    if with_group:
        shutil.copy(project / "config.yaml", folder)
        shutil.copytree(project / "db", folder / "db")
    else:
        (folder / "config.yaml").write_text("steps:\n  - script: tasks/fate.py\n")
    return folder


def printed(project: Path, *args: str) -> str:
    """Return what a printing flag wrote, the project's path and the pid left out."""
    result = run_scheduler(project, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    return re.sub(r"\}-\d+'", "}-<pid>'", result.stdout.replace(str(project), "<project>"))


@pytest.mark.parametrize("with_group", [True, False])
def test_help_is_the_same_with_or_without_clutter_and_groups(
        project: Path, with_group: bool) -> None:
    clean = clean_copy(project, "pro2", with_group)
    text = printed(project, "--help")
    assert text == printed(clean, "--help")
    assert text.startswith("crude-link: run the steps listed in config.yaml")
    assert text.endswith("Hydra's own flags and help: python scheduler.py --hydra-help\n")


@pytest.mark.parametrize("flag", ["--hydra-help", "--info"])
def test_hydra_help_and_info_are_the_same_with_or_without_clutter(
        project: Path, flag: str) -> None:
    assert printed(project, flag) == printed(clean_copy(project, "pro2", True), flag)


def test_info_prints_hydras_sections(project: Path) -> None:
    text = printed(project, "--info")
    sections = ["Installed Hydra Plugins", "Config search path", "Defaults Tree",
                "Defaults List", "Config"]
    at = [text.find(f"\n{section}\n") for section in sections]
    assert -1 not in at and at == sorted(at), text
    assert "ProjectConfigSource" in text
    assert "| main     | crude-link://<project>" in text
    assert "db/postgresql" in text.split("\nDefaults List\n", 1)[1]
    assert "driver: postgresql" in text.split("\nConfig\n", 1)[1]


def test_hydra_help_lists_a_nested_group_and_hydras_own(project: Path) -> None:
    (project / "db" / "replica").mkdir()
    (project / "db" / "replica" / "fast.yaml").write_text("a: 1\n")
    text = printed(project, "--hydra-help")
    hydra_groups, app_groups = text.split("== The app's configuration groups ==", 1)
    assert "hydra/job_logging: default, disabled, none, stdout" in hydra_groups
    assert "hydra/help: crude_link, default" in hydra_groups
    listed = [line.split(":")[0] for line in app_groups.splitlines() if ": " in line]
    assert listed == ["db", "db/replica"], app_groups


@pytest.mark.parametrize("flag", ["--help", "--hydra-help", "--info", "--cfg=job"])
def test_a_reader_that_stops_early_sees_no_traceback(project: Path, flag: str) -> None:
    """`python scheduler.py --help | head -1`: the reader is gone before the help is written."""
    read_end, write_end = os.pipe()
    with subprocess.Popen(scheduler_command(project, flag), cwd=project.parent,
                          stdin=subprocess.DEVNULL, stdout=write_end, stderr=subprocess.PIPE,
                          env=scheduler_env(), encoding="utf-8") as child:
        os.close(write_end)
        os.close(read_end)  # before Hydra has even been imported
        _, errors = child.communicate(timeout=60)
    assert child.returncode == 0, errors
    assert errors == ""


@pytest.mark.parametrize("flag", ["--help", "--hydra-help"])
@pytest.mark.parametrize("override, says", [
    ("nosuch=1", r"Could not override 'nosuch'"),
    # --help composes the user's config (db/ has no nosuch); --hydra-help only Hydra's
    ("db=nosuch", r"Could not find 'db/nosuch'|Could not override 'db'"),
    ("steps.1.x=[", r"no viable alternative at input '\['"),
])
def test_help_with_a_bad_override_says_so_with_exit_2(project: Path, flag: str, override: str,
                                                       says: str) -> None:
    """As a run with that override does: Hydra's message, exit 2, no traceback."""
    before = sorted((project / "outputs").rglob("*"))
    result = subprocess.run(scheduler_command(project, flag, override), cwd=project.parent,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=scheduler_env(), timeout=60)
    assert result.returncode == 2, result.stderr
    assert re.search(says, result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert sorted((project / "outputs").rglob("*")) == before  # no run folder left
