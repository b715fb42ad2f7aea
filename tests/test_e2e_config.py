"""End to end: reading and checking the config (README "The config").

A bad config is reported whole, before any step runs, with exit 2 and no traceback; the
config to read is chosen with Hydra's flags; `--help` lists every step key and option.
"""

import json
import re
import sys
from pathlib import Path
from typing import Any, List

import pytest
from conftest import (
    ONE_STEP,
    OPTIONS,
    ROOT,
    THREE_STEPS,
    assert_rejected,
    line_with,
    load_json,
    make_config,
    run_scheduler,
    summaries,
)
from omegaconf import OmegaConf

sys.path.insert(0, str(ROOT))

from scheduler import OPTION_KEYS, STEP_KEYS  # noqa: E402

pytestmark = pytest.mark.e2e


# ── Every problem, at once ───────────────────────────────────────────────


# Step 0 is always valid and records that it ran: no step may run when the config is bad.
GOOD_STEP = "  - {name: good, script: tasks/fate.py, arguments: {record: ran.json}}\n"


CASES = {
    "missing steps": ("scheduler: {on_failure: ask}\n", ["steps"]),
    "empty steps": ("steps: []\n", ["steps"]),
    "step not a mapping": ("steps:\n" + GOOD_STEP + "  - tasks/fate.py\n", ["steps[1]"]),
    "no script": (
        "steps:\n" + GOOD_STEP + "  - {name: train, arguments: {a: 1}}\n",
        ["steps[1] (train)", "script"],
    ),
    "script missing": (
        "steps:\n" + GOOD_STEP + "  - {script: tasks/nope.py}\n",
        ["steps[1]", "tasks/nope.py"],
    ),
    "script not executable": (
        "steps:\n" + GOOD_STEP + "  - {script: tasks/run.sh}\n",
        ["steps[1]", "tasks/run.sh", "executable"],
    ),
    "unknown step key": (
        "steps:\n" + GOOD_STEP + "  - {name: train, scirpt: tasks/fate.py}\n",
        ["steps[1] (train): unknown key 'scirpt' (did you mean 'script'?)"],
    ),
    "unknown scheduler key": (
        "scheduler: {on_failur: abort}\nsteps:\n" + GOOD_STEP,
        ["scheduler", "'on_failur'", "did you mean 'on_failure'"],
    ),
    "arguments not a mapping": (
        "steps:\n" + GOOD_STEP + "  - {name: t, script: tasks/fate.py, arguments: [a, b]}\n",
        ["steps[1] (t)", "arguments"],
    ),
    "env not a mapping": (
        "steps:\n" + GOOD_STEP + "  - {name: t, script: tasks/fate.py, env: A=1}\n",
        ["steps[1] (t)", "env"],
    ),
    "negative timeout": (
        "steps:\n" + GOOD_STEP + "  - {name: t, script: tasks/fate.py, timeout: -1}\n",
        ["steps[1] (t)", "timeout", "-1"],
    ),
    "non-numeric timeout": (
        "steps:\n" + GOOD_STEP + "  - {name: t, script: tasks/fate.py, timeout: soon}\n",
        ["steps[1] (t)", "timeout", "soon"],
    ),
    "negative retries": (
        "steps:\n" + GOOD_STEP + "  - {name: t, script: tasks/fate.py, retries: -2}\n",
        ["steps[1] (t)", "retries", "-2"],
    ),
    "non-numeric retries": (
        "steps:\n" + GOOD_STEP + "  - {name: t, script: tasks/fate.py, retries: many}\n",
        ["steps[1] (t)", "retries", "many"],
    ),
    "repeated names": (
        "steps:\n" + GOOD_STEP + "  - {name: good, script: tasks/fate.py}\n",
        ["steps[1] (good)", "good"],
    ),
    "on_failure not in the list": (
        "scheduler: {on_failure: ignore}\nsteps:\n" + GOOD_STEP,
        ["scheduler", "on_failure", "ignore"],
    ),
    "unresolvable interpolation": (
        "steps:\n"
        + GOOD_STEP
        + "  - {name: t, script: tasks/fate.py, arguments: {x: '${nowhere}'}}\n",
        ["steps[1]", "arguments", "nowhere"],
    ),
    "unknown key in a hydra interpolation": (
        "steps:\n"
        + GOOD_STEP
        + "  - {name: t, script: tasks/fate.py, arguments: {x: '${hydra:runtime.output_dirr}'}}\n",
        ["steps[1]", "arguments", "output_dirr"],
    ),
}


@pytest.mark.parametrize("config, parts", CASES.values(), ids=CASES.keys())
def test_each_config_problem_is_reported_with_exit_2(
    make_project: Any, config: str, parts: List[str]
) -> None:
    project = make_project(config, {"run.sh": "#!/bin/sh\necho ran > ran.json\n"})
    lines = assert_rejected(project, run_scheduler(project))
    line_with(lines, *parts)


def test_several_problems_are_all_reported_at_once(make_project: Any) -> None:
    project = make_project(
        """\
        scheduler: {on_failure: sometimes, on_failur: abort}
        steps:
          - {name: good, script: tasks/fate.py, arguments: {record: ran.json}}
          - {name: train, scirpt: tasks/fate.py}
          - {name: t2, script: tasks/nope.py, timeout: -5}
          - {name: t3, script: tasks/fate.py, retries: many, env: [A]}
          - {name: good, script: tasks/fate.py, arguments: {x: '${nowhere}'}}
          - 42
        """
    )
    result = run_scheduler(project)
    lines = assert_rejected(project, result)
    expected = [
        ("scheduler", "sometimes"),
        ("scheduler", "'on_failur'", "on_failure"),
        ("steps[1] (train)", "'scirpt'", "did you mean 'script'"),
        ("steps[2] (t2)", "tasks/nope.py"),
        ("steps[2] (t2)", "timeout"),
        ("steps[3] (t3)", "retries", "many"),
        ("steps[3] (t3)", "env"),
        ("steps[4]", "good"),
        ("steps[4]", "nowhere"),
        ("steps[5]", "42"),
    ]
    found = [line_with(lines, *parts) for parts in expected]
    assert len(set(found)) == len(expected)  # one line per problem


@pytest.mark.parametrize("text, problem", [
    ('steps:\n  - script: tasks/fate.py\n    arguments: {a: "b"%s}\n',
     "found character '%' that cannot start any token (line 3, column 23)"),
    ("steps:\n  - script: tasks/fate.py\n   name: bad_indent\n",
     "expected <block end>, but found '<block mapping start>' (line 3, column 4)"),
])
def test_a_config_that_is_not_valid_yaml_gets_one_message_not_a_traceback(
    make_project: Any, text: str, problem: str
) -> None:
    project = make_project("steps: []\n")
    (project / "config.yaml").write_text(text, encoding="utf-8")
    result = run_scheduler(project)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "crude-link: config.yaml is not valid YAML; no step was run:",
        f"  {project / 'config.yaml'}: {problem}",
    ], result.stderr
    assert result.stdout == ""
    assert not (project / "outputs").exists()


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


# ── Programs and argument settings ───────────────────────────────────────


def test_a_program_that_cannot_be_found_is_a_config_error_with_the_others(
    make_project: Any,
) -> None:
    project = make_project(
        """\
        steps:
          - {name: good, script: tasks/fate.py, arguments: {record: ran.json}}
          - {name: interp, script: tasks/fate.py, interpreter: no-such-interpreter-xyz}
          - {name: launch, script: tasks/fate.py, launcher: [no-such-launcher-xyz, -n, 1]}
          - {name: relpath, script: tasks/fate.py, interpreter: [./bin/no-such-path-xyz, -u]}
          - {name: bad, script: tasks/fate.py, timeout: -1}
        """
    )
    lines = assert_rejected(project, run_scheduler(project))
    found = [line_with(lines, "steps[1] (interp)", "interpreter", "no-such-interpreter-xyz"),
             line_with(lines, "steps[2] (launch)", "launcher", "no-such-launcher-xyz"),
             line_with(lines, "steps[3] (relpath)", "no-such-path-xyz"),
             line_with(lines, "steps[4] (bad)", "timeout")]
    assert len(set(found)) == 4
    assert not any("steps[0]" in line for line in lines)


def test_a_default_launcher_that_cannot_be_found_is_a_config_error(make_project: Any) -> None:
    project = make_project(
        """\
        scheduler: {launcher: [no-such-default-launcher-xyz]}
        steps:
          - {name: good, script: tasks/fate.py, arguments: {record: ran.json}}
        """
    )
    lines = assert_rejected(project, run_scheduler(project))
    line_with(lines, "no-such-default-launcher-xyz")


@pytest.mark.parametrize("fmt", ["--{key} {value}", "{key.__class__}", "{key[0]}={value}",
                                 "{0}={value}", "{other}={value}", "{key}={value!r}"])
def test_an_argument_format_beyond_key_and_value_points_to_argument_style(
    make_project: Any, fmt: str
) -> None:
    project = make_project(
        f"""\
        steps:
          - {{name: good, script: tasks/fate.py, arguments: {{record: ran.json}}}}
          - {{name: t, script: tasks/fate.py, argument_format: {json.dumps(fmt)},
              arguments: {{a: 1}}}}
        """
    )
    lines = assert_rejected(project, run_scheduler(project))
    line_with(lines, "steps[1] (t)", "argument_format", "argument_style")


@pytest.mark.parametrize("config, parts", [
    ("steps:\n  - {name: good, script: tasks/fate.py, arguments: {record: ran.json}}\n"
     "  - {name: t, script: tasks/fate.py, argument_style: getopt}\n",
     ["steps[1] (t)", "argument_style", "getopt", "omegaconf", "hydra", "argparse", "click"]),
    ("scheduler: {argument_style: docopt}\n"
     "steps:\n  - {name: good, script: tasks/fate.py, arguments: {record: ran.json}}\n",
     ["argument_style", "docopt"]),
    ("steps:\n  - {name: good, script: tasks/fate.py, arguments: {record: ran.json}}\n"
     "  - {name: t, script: tasks/fate.py, argument_style: argparse,"
     " arguments: {items: [{a: 1}]}}\n",
     ["steps[1] (t)", "items"]),
    ("steps:\n  - {name: good, script: tasks/fate.py, arguments: {record: ran.json}}\n"
     "  - {name: t, script: tasks/fate.py, argument_style: hydra,"
     ' arguments: {text: "a\\0b"}}\n',
     ["steps[1] (t)", "text"]),
    ("steps:\n  - {name: good, script: tasks/fate.py, arguments: {record: ran.json}}\n"
     "  - {name: t, script: tasks/fate.py, args: [a, [b]]}\n",
     ["steps[1] (t)", "args"]),
], ids=["unknown style", "unknown default style", "argparse list of mappings", "hydra NUL",
        "args not words"])
def test_argument_problems_are_config_errors(make_project: Any, config: str,
                                             parts: List[str]) -> None:
    project = make_project(config)
    lines = assert_rejected(project, run_scheduler(project))
    line_with(lines, *parts)


def test_an_unknown_default_style_on_the_command_line_is_a_config_error(
    make_project: Any,
) -> None:
    project = make_project(
        OPTIONS + "steps:\n  - {name: good, script: tasks/fate.py, arguments: {record: ran.json}}\n"
    )
    lines = assert_rejected(project, run_scheduler(project, "scheduler.argument_style=shell"))
    line_with(lines, "argument_style", "shell")


# ── Which config: Hydra's flags ──────────────────────────────────────────


def test_hydra_cfg_job_prints_the_config_and_runs_no_step(make_project: Any) -> None:
    project = make_project(ONE_STEP)
    result = run_scheduler(project, "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert not (project / "record.json").exists()
    assert list(project.glob("outputs/*/*/[0-9][0-9]-*.log")) == []
    assert OmegaConf.create(result.stdout).steps[0].script == "tasks/fate.py"


def test_config_name_and_config_dir_choose_the_config(make_project: Any, tmp_path: Path) -> None:
    project = make_project(ONE_STEP)
    other = "steps:\n  - {script: tasks/fate.py, arguments: {record: %s.json}}\n"
    (project / "other.yaml").write_text(other % "other")
    elsewhere = tmp_path / "confs"
    elsewhere.mkdir()
    (elsewhere / "third.yaml").write_text(other % "third")
    assert run_scheduler(project, "--config-name", "other").returncode == 0
    third = run_scheduler(project, "--config-dir", str(elsewhere), "--config-name", "third")
    assert third.returncode == 0, third.stderr
    assert (project / "other.json").exists()
    assert load_json(project / "third.json")["cwd"] == str(project)  # the root stays the root
    assert not (project / "record.json").exists()


# ── Help ─────────────────────────────────────────────────────────────────


def test_help_lists_every_step_key_scheduler_option_and_style(make_project: Any) -> None:
    project = make_project(make_config(THREE_STEPS))
    result = run_scheduler(project, "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "crude-link" in result.stdout
    for key in sorted(STEP_KEYS):
        assert re.search(rf"^\s+{key}\s", result.stdout, re.MULTILINE), key
    for key in sorted(OPTION_KEYS):
        assert re.search(rf"^\s+{key}\s", result.stdout, re.MULTILINE), key
    for style in ("omegaconf", "hydra", "argparse", "click"):
        assert re.search(rf"\b{style}\b", result.stdout), style
    assert "--hydra-help" in result.stdout and "--cfg" in result.stdout
    assert "== Flags ==" not in result.stdout  # Hydra's own help is elsewhere
    assert not (project / "a.json").exists()
    assert list(project.glob("outputs/*/*/[0-9][0-9]-*.log")) == []
    assert summaries(project) == {}


def test_hydra_help_still_shows_hydras_help(make_project: Any) -> None:
    project = make_project(make_config(THREE_STEPS))
    result = run_scheduler(project, "--hydra-help")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "== Flags ==" in result.stdout
    assert "--multirun,-m" in result.stdout
    assert not (project / "a.json").exists()


