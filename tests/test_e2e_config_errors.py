"""End to end: a bad config is reported whole, before any step runs, with exit 2 (CONTRACT §8)."""

import stat
from typing import Any, List

import pytest
from conftest import assert_rejected, line_with, run_scheduler

pytestmark = pytest.mark.e2e

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


def test_a_non_python_script_must_be_executable_and_then_runs(make_project: Any) -> None:
    project = make_project("steps:\n  - {script: tasks/run.sh}\n", {"run.sh": "#!/bin/sh\n"})
    assert_rejected(project, run_scheduler(project))
    script = project / "tasks" / "run.sh"
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    assert run_scheduler(project).returncode == 0


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
